"""Block-quantised int8 ONNX (OpenCV Zoo `*_int8bq.onnx`, e.g. SFace) -> plain fp32 ONNX.

The OpenCV Zoo int8 "block quantised" graphs keep every weight as int8 blocks behind a
`DequantizeLinear` (opset 21, `block_size`) and a `Reshape`, and still list the names of the original
fp32 weights as graph inputs although no node reads them. The conversion:

- drops graph inputs that no node reads (`drop_dangling_inputs`; onnxruntime warns or refuses on them);
- moves initializers out of the graph inputs, so they are constants the optimiser may fold;
- dequantises every constant `DequantizeLinear` (and the constant `Reshape` after it) to fp32 once, so
  the graph runs float convolutions: the same embeddings (cosine to int8 >= 0.9999, tests/unit/test_sface.py)
  and faster on CPU than dequantising on every run;
- frees the batch dimension of the input and output (the file is fixed at batch 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Int8bqConversionError(ValueError):
    """The graph is not one this converter understands."""


def drop_dangling_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Graph inputs no node reads are removed; initializers are no longer listed as inputs."""
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    initializers = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name in read and i.name not in initializers]
    del graph.input[:]
    graph.input.extend(keep)
    return model


def _dequantize(
    x: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int
) -> np.ndarray:
    """DequantizeLinear (opset 21): y = (x - zero) * scale, scale per tensor, per axis or per block."""
    x = x.astype(np.float32)
    zero = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (x - zero.reshape(())) * scale.reshape(()).astype(np.float32)
    axis = axis % x.ndim
    if block:
        # Blocks run along `axis`; scale has x's shape with that axis divided (rounded up) by the block.
        scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    else:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((x - zero) * scale.astype(np.float32)).astype(np.float32)


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace constant DequantizeLinear (+ constant Reshape) nodes by fp32 initializers."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept, folded = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear" and all(n in consts for n in node.input if n):
            inputs = [consts[n] if n else None for n in node.input]
            zero = inputs[2] if len(inputs) > 2 else None
            consts[node.output[0]] = _dequantize(
                inputs[0], inputs[1], zero, attrs.get("axis", 1), attrs.get("block_size", 0)
            )
            folded += 1
        elif node.op_type == "Reshape" and all(n in consts for n in node.input):
            data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
            if attrs.get("allowzero", 0) == 0:  # a 0 copies that dimension of the input
                shape = np.array([data.shape[i] if d == 0 else d for i, d in enumerate(shape)])
            consts[node.output[0]] = data.reshape(shape)
        else:
            kept.append(node)
    if not folded:
        raise Int8bqConversionError("no constant DequantizeLinear node: not a block-quantised graph")
    read = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    new_inits = [
        numpy_helper.from_array(np.ascontiguousarray(value), name)
        for name, value in consts.items()
        if name in read
    ]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    left = [n.op_type for n in kept if n.op_type in ("DequantizeLinear", "QuantizeLinear")]
    if left:
        raise Int8bqConversionError(f"{len(left)} quantisation nodes depend on activations; cannot fold")
    return model


def free_batch(model: onnx.ModelProto, name: str = "N") -> onnx.ModelProto:
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = name
    # Shapes inferred for batch 1 would pin it again; the runtime infers them afresh.
    del model.graph.value_info[:]
    return model


def convert(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    model = free_batch(fold_dequantize(drop_dangling_inputs(model)))
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    helper.set_model_props(model, {"source_sha256": digest, "source_format": "int8 block-quantised ONNX"})
    onnx.checker.check_model(model)
    Path(dst).write_bytes(model.SerializeToString())
