"""TFLite -> ONNX converter: the real MediaPipe graphs, and small graphs built here for the op variants
the MediaPipe files do not use (fp16 weights, fused activations, concatenation, odd SAME padding)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workers.models.convert import tflite
from workers.models.convert.tflite import TFLiteConversionError


def source_file(name: str) -> Path:
    """The verified original .tflite of a registry model (face_landmark, iris_landmark)."""
    from workers.models.fetch import fetch_source

    return fetch_source(name)


def session(path: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def test_not_a_tflite_file() -> None:
    with pytest.raises(TFLiteConversionError, match="TFL3"):
        tflite.tflite_to_onnx(b"\x00" * 64)


@pytest.mark.models
@pytest.mark.parametrize(
    ("name", "size", "outputs"),
    [
        ("face_landmark", 192, {"landmarks": ["N", 1, 1, 1404], "face_flag": ["N", 1, 1, 1]}),
        ("iris_landmark", 64, {"eye_contour": ["N", 213], "iris": ["N", 15]}),
    ],
)
def test_mediapipe_graph_converts(name: str, size: int, outputs: dict, tmp_path: Path) -> None:
    dst = tmp_path / f"{name}.onnx"
    tflite.convert(source_file(name), dst)
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 3, size, size]
    got = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output
    }
    assert got == outputs
    # Layout is switched once at the input and once per output: no transposes inside the network.
    assert sum(n.op_type == "Transpose" for n in model.graph.node) == sum(
        len(v) == 4 for v in outputs.values()
    )

    # Dynamic batch: a batch of 3 gives what 3 single runs give.
    sess = session(dst)
    x = np.random.default_rng(0).random((3, 3, size, size), dtype=np.float32)
    batched = sess.run(None, {"input": x})
    single = [sess.run(None, {"input": x[i : i + 1]}) for i in range(3)]
    for k, out in enumerate(batched):
        np.testing.assert_allclose(out, np.concatenate([s[k] for s in single]), atol=1e-4)


# --- small graphs built with the TFLite schema (ai-edge-litert ships the generated classes) ----------


class _TinyModel:
    """Builds a .tflite flatbuffer op by op (the object API of the generated schema)."""

    def __init__(self, schema: ModuleType) -> None:
        self.fb = schema
        self.tensors: list = []
        self.buffers = [schema.BufferT()]  # buffer 0: the empty buffer of activations
        self.codes: list[int] = []
        self.ops: list = []

    def tensor(self, shape: list[int], data: np.ndarray | None = None, kind: int = 0) -> int:
        t = self.fb.TensorT()
        t.shape, t.type, t.name, t.buffer = list(shape), kind, f"t{len(self.tensors)}", 0
        if data is not None:
            buf = self.fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            t.buffer = len(self.buffers)
            self.buffers.append(buf)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self, code: int, inputs: list[int], outputs: list[int], kind: int = 0, options: Any = None
    ) -> None:
        if code not in self.codes:
            self.codes.append(code)
        o = self.fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), inputs, outputs
        o.builtinOptionsType, o.builtinOptions = kind, options
        self.ops.append(o)

    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        import flatbuffers

        fb = self.fb
        graph = fb.SubGraphT()
        graph.tensors, graph.inputs, graph.outputs, graph.operators = self.tensors, inputs, outputs, self.ops
        model = fb.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [graph], self.buffers
        model.operatorCodes = [fb.OperatorCodeT(deprecatedBuiltinCode=c, builtinCode=c) for c in self.codes]
        builder = flatbuffers.Builder(4096)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _options(cls: type, **fields: Any) -> Any:
    opts = cls()
    for key, value in fields.items():
        setattr(opts, key, value)
    return opts


def _run_tflite(model: bytes, x: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return [interp.get_tensor(o["index"]) for o in interp.get_output_details()]


@pytest.mark.peers
def test_op_variants_match_tflite() -> None:
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    pytest.importorskip("flatbuffers")
    op, opt, act = schema.BuiltinOperator, schema.BuiltinOptions, schema.ActivationFunctionType
    rng = np.random.default_rng(1)
    m = _TinyModel(schema)
    x = m.tensor([1, 9, 9, 4])  # odd size: SAME padding is asymmetric at stride 2

    # fp16 weights behind DEQUANTIZE, 3x3 stride 2 SAME, fused RELU6.
    w16 = m.tensor(
        [6, 3, 3, 4], rng.normal(size=(6, 3, 3, 4)).astype(np.float16), kind=schema.TensorType.FLOAT16
    )
    w = m.tensor([6, 3, 3, 4])
    m.op(op.DEQUANTIZE, [w16], [w])
    b = m.tensor([6], rng.normal(size=6).astype(np.float32))
    conv = m.tensor([1, 5, 5, 6])
    conv_opts = _options(
        schema.Conv2DOptionsT,
        padding=schema.Padding.SAME,
        strideW=2,
        strideH=2,
        fusedActivationFunction=act.RELU6,
    )
    m.op(op.CONV_2D, [x, w, b], [conv], opt.Conv2DOptions, conv_opts)

    # Depthwise with depth multiplier 2, fused RELU_N1_TO_1.
    dw = m.tensor([1, 3, 3, 8], rng.normal(size=(1, 3, 3, 8)).astype(np.float32))
    db = m.tensor([8], rng.normal(size=8).astype(np.float32))
    dconv = m.tensor([1, 5, 5, 8])
    dw_opts = _options(
        schema.DepthwiseConv2DOptionsT,
        padding=schema.Padding.SAME,
        strideW=2,
        strideH=2,
        depthMultiplier=2,
        fusedActivationFunction=act.RELU_N1_TO_1,
    )
    m.op(op.DEPTHWISE_CONV_2D, [x, dw, db], [dconv], opt.DepthwiseConv2DOptions, dw_opts)

    cat = m.tensor([1, 5, 5, 14])
    m.op(
        op.CONCATENATION,
        [conv, dconv],
        [cat],
        opt.ConcatenationOptions,
        _options(schema.ConcatenationOptionsT, axis=-1),
    )
    alpha = m.tensor([1, 1, 14], rng.uniform(-1, 1.5, size=(1, 1, 14)).astype(np.float32))  # per channel
    prelu = m.tensor([1, 5, 5, 14])
    m.op(op.PRELU, [cat, alpha], [prelu])
    bias = m.tensor([14], rng.normal(size=14).astype(np.float32))
    added = m.tensor([1, 5, 5, 14])
    add_opts = _options(schema.AddOptionsT, fusedActivationFunction=act.RELU)
    m.op(op.ADD, [prelu, bias], [added], opt.AddOptions, add_opts)

    # 2x2 stride 2 SAME max pool on 5x5: one padded row/column at bottom/right only.
    pooled = m.tensor([1, 3, 3, 14])
    pool_opts = _options(
        schema.Pool2DOptionsT,
        padding=schema.Padding.SAME,
        strideW=2,
        strideH=2,
        filterWidth=2,
        filterHeight=2,
    )
    m.op(op.MAX_POOL_2D, [added], [pooled], opt.Pool2DOptions, pool_opts)
    pads = m.tensor(
        [4, 2], np.array([[0, 0], [1, 0], [0, 2], [0, 3]], np.int32), kind=schema.TensorType.INT32
    )
    # PRELU with a slope per position and channel (the general, non-per-channel form).
    alpha2 = m.tensor([3, 3, 14], rng.uniform(-1, 1.5, size=(3, 3, 14)).astype(np.float32))
    prelu2 = m.tensor([1, 3, 3, 14])
    m.op(op.PRELU, [pooled, alpha2], [prelu2])
    padded = m.tensor([1, 4, 5, 17])
    m.op(op.PAD, [prelu2, pads], [padded])
    shape = m.tensor([2], np.array([1, 340], np.int32), kind=schema.TensorType.INT32)
    flat = m.tensor([1, 340])
    m.op(
        op.RESHAPE,
        [padded, shape],
        [flat],
        opt.ReshapeOptions,
        _options(schema.ReshapeOptionsT, newShape=[1, 340]),
    )
    model = m.build([x], [flat, pooled])

    data = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
    want = _run_tflite(model, data)
    sess = session(tflite.tflite_to_onnx(model).SerializeToString())
    got = sess.run(None, {"input": data.transpose(0, 3, 1, 2)})
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w_ in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w_, atol=1e-4)
    assert np.abs(want[0]).max() > 0.5  # a real signal went through, not all zeros


@pytest.mark.peers
def test_unknown_op_is_named() -> None:
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    pytest.importorskip("flatbuffers")
    m = _TinyModel(schema)
    x, y = m.tensor([1, 4, 4, 3]), m.tensor([1, 4, 4, 3])
    m.op(schema.BuiltinOperator.TANH, [x], [y])
    with pytest.raises(TFLiteConversionError, match="unsupported TFLite operator TANH"):
        tflite.tflite_to_onnx(m.build([x], [y]))
