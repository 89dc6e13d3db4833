"""TFLite flatbuffer -> ONNX for the float MediaPipe graphs (face mesh, iris landmarks).

The .tflite file is read with a minimal flatbuffer reader written here (struct + numpy, about sixty
lines) instead of the `tflite` schema package: the converter runs in the worker's model fetcher, and
the few tables and fields it needs do not justify another runtime dependency.

TFLite semantics kept exactly:
- activations are NHWC in TFLite; the ONNX graph runs NCHW and transposes only at the boundaries
  (graph input/outputs and RESHAPE, whose element order depends on the layout);
- SAME padding is made explicit and asymmetric as TFLite does it (the odd pixel at bottom/right);
- fused activations become separate nodes; fp16 weights behind DEQUANTIZE are folded to float32;
- PRELU is rewritten into ops onnxruntime runs several times faster (see `_Emitter.prelu`);
- the batch dimension is dynamic (the .tflite graphs are fixed at batch 1).

An operator outside the supported set stops the conversion with an error that names it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

# BuiltinOperator codes of the TFLite schema (the first 61; enough to name what we meet).
_OP_NAMES = [
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "EMBEDDING_LOOKUP",
    "FLOOR",
    "FULLY_CONNECTED",
    "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION",
    "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION",
    "LOGISTIC",
    "LSH_PROJECTION",
    "LSTM",
    "MAX_POOL_2D",
    "MUL",
    "RELU",
    "RELU_N1_TO_1",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "RNN",
    "SOFTMAX",
    "SPACE_TO_DEPTH",
    "SVDF",
    "TANH",
    "CONCAT_EMBEDDINGS",
    "SKIP_GRAM",
    "CALL",
    "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE",
    "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "GATHER",
    "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND",
    "TRANSPOSE",
    "MEAN",
    "SUB",
    "DIV",
    "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP",
    "TOPK_V2",
    "SPLIT",
    "LOG_SOFTMAX",
    "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "CAST",
    "PRELU",
    "MAXIMUM",
    "ARG_MAX",
    "MINIMUM",
    "LESS",
    "NEG",
    "PADV2",
]

# TensorType codes -> numpy dtypes we can hold as constants.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}

# Friendlier names for the outputs of the two MediaPipe graphs; other graphs keep their TFLite names.
OUTPUT_NAMES = {
    "conv2d_20": "landmarks",  # face_landmark: 468 x (x, y, z) in 192x192 input pixels
    "conv2d_30": "face_flag",  # face_landmark: face presence logit (sigmoid -> score)
    "output_eyes_contours_and_brows": "eye_contour",  # iris_landmark: 71 x (x, y, z) in 64x64 pixels
    "output_iris": "iris",  # iris_landmark: 5 x (x, y, z), centre first
}

_NHWC_TO_NCHW = (0, 3, 1, 2)
_NCHW_TO_NHWC = (0, 2, 3, 1)


class TFLiteConversionError(ValueError):
    pass


# --- minimal flatbuffer reader -------------------------------------------------------------------


class _Table:
    """One flatbuffer table: fields are addressed by their slot number in the schema."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vtable_size:
            return None  # written by an older schema: field absent
        rel = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + rel if rel else None

    def _target(self, slot: int) -> int | None:
        at = self._field(slot)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        at = self._field(slot)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def table(self, slot: int) -> _Table | None:
        at = self._target(slot)
        return None if at is None else _Table(self.buf, at)

    def tables(self, slot: int) -> list[_Table]:
        at = self._target(slot)
        if at is None:
            return []
        count = struct.unpack_from("<I", self.buf, at)[0]
        elems = [at + 4 + 4 * i for i in range(count)]
        return [_Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]) for e in elems]

    def vector(self, slot: int, dtype: type) -> np.ndarray:
        at = self._target(slot)
        if at is None:
            return np.zeros(0, dtype)
        count = struct.unpack_from("<I", self.buf, at)[0]
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=at + 4)

    def string(self, slot: int) -> str:
        return self.vector(slot, np.uint8).tobytes().decode("utf-8", "replace")


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None  # constant contents, None for activations


@dataclass
class _Op:
    name: str
    inputs: list[int]  # -1 = optional input left out
    outputs: list[int]
    options: _Table | None


@dataclass
class _Graph:
    tensors: list[_Tensor]
    inputs: list[int]
    outputs: list[int]
    ops: list[_Op]


def _op_name(table: _Table) -> str:
    # Codes above 127 live in `builtin_code` (slot 3); old files only have the byte in slot 0.
    code = max(table.scalar(0, "b"), table.scalar(3, "i"))
    if code == 32:
        return f"CUSTOM({table.string(1)})"
    return _OP_NAMES[code] if code < len(_OP_NAMES) else f"builtin operator code {code}"


def _read(buf: bytes) -> _Graph:
    if buf[4:8] != b"TFL3":
        raise TFLiteConversionError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    op_names = [_op_name(t) for t in model.tables(1)]
    subgraphs = model.tables(2)
    if len(subgraphs) != 1:
        raise TFLiteConversionError(f"expected one subgraph, found {len(subgraphs)}")
    buffers = model.tables(4)
    graph = subgraphs[0]

    tensors = []
    for t in graph.tables(0):
        type_code = t.scalar(1, "b")
        name = t.string(3)
        if type_code not in _DTYPES:
            raise TFLiteConversionError(f"tensor {name!r} has unsupported TFLite type code {type_code}")
        dtype = _DTYPES[type_code]
        shape = tuple(int(d) for d in t.vector(0, np.int32))
        quant = t.table(4)
        if quant is not None and quant.vector(2, np.float32).size:  # QuantizationParameters.scale
            raise TFLiteConversionError(f"tensor {name!r} is quantised; only float graphs are supported")
        data = None
        b = buffers[t.scalar(2, "I")]
        raw = b.vector(0, np.uint8)
        offset, size = b.scalar(1, "Q"), b.scalar(2, "Q")
        if not raw.size and offset > 1:  # large models keep buffers after the flatbuffer
            raw = np.frombuffer(buf, np.uint8, count=size, offset=offset)
        if raw.size:
            data = raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        tensors.append(_Tensor(name, shape, dtype, data))

    ops = []
    for o in graph.tables(3):
        ops.append(
            _Op(
                op_names[o.scalar(0, "I")],
                [int(i) for i in o.vector(1, np.int32)],
                [int(i) for i in o.vector(2, np.int32)],
                o.table(4),
            )
        )
    return _Graph(
        tensors, [int(i) for i in graph.vector(1, np.int32)], [int(i) for i in graph.vector(2, np.int32)], ops
    )


# --- ONNX emission -------------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding along one axis: total split evenly, the odd pixel after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _to_nchw_const(value: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC activation, re-laid to broadcast against NCHW."""
    if value.ndim == 0:
        return value
    value = value.reshape((1,) * (4 - value.ndim) + value.shape)
    return value.transpose(_NHWC_TO_NCHW)


class _Emitter:
    def __init__(self, graph: _Graph) -> None:
        self.g = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.consts = {i: t.data for i, t in enumerate(graph.tensors) if t.data is not None}
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name (rank-4 values are NCHW)
        self._used: set[str] = set()

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self._used:
            name, n = f"{base}_{n}", n + 1
        self._used.add(name)
        return name

    def init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs: object) -> str:
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def shape(self, idx: int) -> tuple[int, ...]:
        return self.g.tensors[idx].shape

    def const(self, idx: int, what: str) -> np.ndarray:
        if idx not in self.consts:
            raise TFLiteConversionError(f"{what} ({self.g.tensors[idx].name!r}) must be a constant")
        return self.consts[idx]

    def value(self, idx: int, like: int | None = None) -> str:
        """ONNX name of tensor idx; a constant used beside a rank-4 activation is re-laid to NCHW."""
        if idx in self.names:
            return self.names[idx]
        value = self.const(idx, "operand")
        if like is not None and len(self.shape(like)) == 4:
            value = _to_nchw_const(value)
        return self.init(self.g.tensors[idx].name or "const", value)

    def activation(self, x: str, code: int, base: str) -> str:
        if code == 0:
            return x
        if code == 1:
            return self.node("Relu", [x], base + "_relu")
        if code in (2, 3):  # RELU_N1_TO_1, RELU6
            lo, hi = (-1.0, 1.0) if code == 2 else (0.0, 6.0)
            bounds = [self.init(base + "_min", np.float32(lo)), self.init(base + "_max", np.float32(hi))]
            return self.node("Clip", [x, *bounds], base + "_clip")
        if code == 4:
            return self.node("Tanh", [x], base + "_tanh")
        raise TFLiteConversionError(f"fused activation code {code} is not supported")

    # One method per TFLite operator; each returns the ONNX name of the op's (single) output.

    def conv(self, op: _Op, base: str, depthwise: bool) -> str:
        o = op.options
        x_idx, w_idx = op.inputs[0], op.inputs[1]
        _, h, w, c = self.shape(x_idx)
        weight = self.const(w_idx, "filter").astype(np.float32)
        if depthwise:  # [1, KH, KW, C*M] -> [C*M, 1, KH, KW], one group per input channel
            weight = weight.transpose(3, 0, 1, 2)
            groups = c
            stride_w, stride_h, act = o.scalar(1, "i"), o.scalar(2, "i"), o.scalar(4, "b")
            dil_w, dil_h = o.scalar(5, "i", 1), o.scalar(6, "i", 1)
        else:  # [O, KH, KW, I] -> [O, I, KH, KW]; I < C means a grouped convolution
            weight = weight.transpose(0, 3, 1, 2)
            groups = c // weight.shape[1]
            stride_w, stride_h, act = o.scalar(1, "i"), o.scalar(2, "i"), o.scalar(3, "b")
            dil_w, dil_h = o.scalar(4, "i", 1), o.scalar(5, "i", 1)
        kh, kw = weight.shape[2:]
        pads = [0, 0, 0, 0]
        if o.scalar(0, "b") == 0:  # SAME
            top, bottom = _same_pads(h, kh, stride_h, dil_h)
            left, right = _same_pads(w, kw, stride_w, dil_w)
            pads = [top, left, bottom, right]
        inputs = [self.names[x_idx], self.init(base + "_w", weight)]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            inputs.append(self.init(base + "_b", self.const(op.inputs[2], "bias").astype(np.float32)))
        y = self.node(
            "Conv",
            inputs,
            base,
            kernel_shape=[kh, kw],
            strides=[stride_h, stride_w],
            dilations=[dil_h, dil_w],
            pads=pads,
            group=groups,
        )
        return self.activation(y, act, base)

    def max_pool(self, op: _Op, base: str) -> str:
        o = op.options
        _, h, w, _ = self.shape(op.inputs[0])
        stride_w, stride_h, kw, kh = (o.scalar(i, "i") for i in (1, 2, 3, 4))
        pads = [0, 0, 0, 0]
        if o.scalar(0, "b") == 0:  # SAME; padded cells never win the max, in TFLite as in ONNX
            top, bottom = _same_pads(h, kh, stride_h, 1)
            left, right = _same_pads(w, kw, stride_w, 1)
            pads = [top, left, bottom, right]
        y = self.node(
            "MaxPool",
            [self.names[op.inputs[0]]],
            base,
            kernel_shape=[kh, kw],
            strides=[stride_h, stride_w],
            pads=pads,
        )
        return self.activation(y, o.scalar(5, "b"), base)

    def add(self, op: _Op, base: str) -> str:
        a, b = op.inputs
        like = a if a in self.names else b
        y = self.node("Add", [self.value(a, like), self.value(b, like)], base)
        return self.activation(y, op.options.scalar(0, "b") if op.options else 0, base)

    def prelu(self, op: _Op, base: str) -> str:
        # onnxruntime's PRelu with a per-channel slope is ~10x slower than plain vectorised kernels, so
        # PRELU is rewritten; both forms below agree with TFLite to float rounding.
        x, alpha = op.inputs
        slope = self.const(alpha, "PRELU alpha").astype(np.float32)
        src = self.names[x]
        pos = self.node("Relu", [src], base + "_pos")
        channels = self.shape(x)[-1]
        if len(self.shape(x)) == 4 and slope.size == channels:
            # alpha * x + (1 - alpha) * relu(x) as two 1x1 depthwise convolutions and an add: onnxruntime
            # keeps these in its blocked conv layout (no reorders around every PRELU), ~35% faster still.
            def dw(value: np.ndarray, suffix: str) -> str:
                return self.init(base + suffix, value.reshape(channels, 1, 1, 1))

            linear = self.node("Conv", [src, dw(slope, "_alpha")], base + "_linear", group=channels)
            rest = self.node("Conv", [pos, dw(1 - slope, "_rest")], base + "_rest_scaled", group=channels)
            return self.node("Add", [linear, rest], base)
        # General slope: relu(x) + alpha * min(x, 0), exact (one of the two terms is 0).
        if len(self.shape(x)) == 4:
            slope = _to_nchw_const(slope)
        neg = self.node("Min", [src, self.init(base + "_zero", np.float32(0))], base + "_neg")
        scaled = self.node("Mul", [neg, self.init(base + "_alpha", slope)], base + "_scaled")
        return self.node("Add", [pos, scaled], base)

    def pad(self, op: _Op, base: str) -> str:
        x = op.inputs[0]
        pads = self.const(op.inputs[1], "PAD paddings").astype(np.int64).reshape(-1, 2)
        if len(pads) == 4:
            pads = pads[list(_NHWC_TO_NCHW)]
        onnx_pads = np.concatenate([pads[:, 0], pads[:, 1]])
        return self.node("Pad", [self.names[x], self.init(base + "_pads", onnx_pads)], base, mode="constant")

    def reshape(self, op: _Op, base: str) -> str:
        x, y = op.inputs[0], op.outputs[0]
        in_shape, out_shape = self.shape(x), self.shape(y)
        if in_shape[0] != 1 or out_shape[0] != 1:
            raise TFLiteConversionError("RESHAPE that moves the batch dimension is not supported")
        src = self.names[x]
        # Flattening order is NHWC's; with H*W == 1 both layouts hold the same order.
        if len(in_shape) == 4 and in_shape[1] * in_shape[2] != 1:
            src = self.node("Transpose", [src], base + "_nhwc", perm=list(_NCHW_TO_NHWC))
        target = self.init(base + "_shape", np.array([-1, *out_shape[1:]], np.int64))
        out = self.node("Reshape", [src, target], base)
        if len(out_shape) == 4:
            out = self.node("Transpose", [out], base + "_nchw", perm=list(_NHWC_TO_NCHW))
        return out

    def concat(self, op: _Op, base: str) -> str:
        rank = len(self.shape(op.outputs[0]))
        axis = op.options.scalar(0, "i") % rank
        if rank == 4:
            axis = _NHWC_TO_NCHW.index(axis)
        like = next(i for i in op.inputs if i in self.names)
        y = self.node("Concat", [self.value(i, like) for i in op.inputs], base, axis=axis)
        return self.activation(y, op.options.scalar(1, "b"), base)

    def emit(self) -> onnx.ModelProto:
        g = self.g
        graph_inputs = []
        for n, idx in enumerate(g.inputs):
            t = g.tensors[idx]
            if t.dtype is not np.float32:
                raise TFLiteConversionError(f"graph input {t.name!r} is not float32")
            name = self.fresh("input" if len(g.inputs) == 1 else f"input_{n}")
            shape: list[int | str] = ["N", *t.shape[1:]]
            if len(t.shape) == 4:
                shape = ["N", t.shape[3], t.shape[1], t.shape[2]]
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            self.names[idx] = name

        for op in g.ops:
            if len(op.outputs) != 1:
                raise TFLiteConversionError(f"{op.name} with {len(op.outputs)} outputs is not supported")
            out_idx = op.outputs[0]
            base = g.tensors[out_idx].name or op.name.lower()
            if op.name == "DEQUANTIZE":
                src = self.const(op.inputs[0], "DEQUANTIZE input")
                if src.dtype != np.float16:
                    raise TFLiteConversionError("DEQUANTIZE of integer tensors is not supported")
                self.consts[out_idx] = src.astype(np.float32)  # fp16 weights: fold to float32
                continue
            if op.name == "CONV_2D":
                y = self.conv(op, base, depthwise=False)
            elif op.name == "DEPTHWISE_CONV_2D":
                y = self.conv(op, base, depthwise=True)
            elif op.name == "MAX_POOL_2D":
                y = self.max_pool(op, base)
            elif op.name == "ADD":
                y = self.add(op, base)
            elif op.name == "PRELU":
                y = self.prelu(op, base)
            elif op.name == "PAD":
                y = self.pad(op, base)
            elif op.name == "RESHAPE":
                y = self.reshape(op, base)
            elif op.name == "CONCATENATION":
                y = self.concat(op, base)
            else:
                raise TFLiteConversionError(
                    f"unsupported TFLite operator {op.name} (producing tensor {g.tensors[out_idx].name!r})"
                )
            self.names[out_idx] = y

        graph_outputs = []
        for idx in g.outputs:
            t = g.tensors[idx]
            name = self.fresh(OUTPUT_NAMES.get(t.name, t.name))
            if len(t.shape) == 4:  # back to TFLite's NHWC at the boundary
                self.nodes.append(
                    helper.make_node("Transpose", [self.names[idx]], [name], perm=list(_NCHW_TO_NHWC))
                )
            else:
                self.nodes.append(helper.make_node("Identity", [self.names[idx]], [name]))
            out = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *t.shape[1:]])
            out.doc_string = f"TFLite output {t.name!r}"
            graph_outputs.append(out)

        graph = helper.make_graph(self.nodes, "tflite", graph_inputs, graph_outputs, self.inits)
        # IR version pinned to what opset 17 needs, so older onnxruntime builds load the file too.
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
        model.producer_name = "facequeue.tflite"
        return model


def tflite_to_onnx(buf: bytes) -> onnx.ModelProto:
    return _Emitter(_read(buf)).emit()


def convert(src: Path, dst: Path) -> None:
    model = tflite_to_onnx(Path(src).read_bytes())
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
