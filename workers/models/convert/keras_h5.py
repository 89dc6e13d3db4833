"""Keras HDF5 (.h5 / .hdf5, `model_config` + `model_weights`) -> ONNX, without TensorFlow.

Reads the functional-model config with h5py and writes an NCHW float32 graph with a dynamic batch
dimension. The layout is folded into the weights (HWIO kernels become OIHW, channel axes move to 1), so
the graph has no Transpose at all; callers feed NCHW. BatchNormalization and scalar-scale Lambda layers
that directly follow a linear convolution or dense layer are folded into its weights.

Supported layers: InputLayer, Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization,
Activation (linear, relu, sigmoid, tanh, softmax), ReLU, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, GlobalMaxPooling2D, Add, Concatenate, Dropout, Flatten, and Lambda layers that
scale their single input by one numeric argument (`lambda x, scale: x * scale`, as in Inception-ResNet).
Anything else raises `KerasConversionError` naming the layer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loadable by every onnxruntime >= 1.14
INPUT_NAME = "input"
OUTPUT_NAME = "output"


class KerasConversionError(ValueError):
    """The Keras file uses something this converter does not translate."""


@dataclass
class _Layer:
    name: str
    kind: str
    config: dict[str, Any]
    inputs: list[str]


@dataclass
class _Tensor:
    """An ONNX value plus its shape without the batch axis: (C, H, W) for images, (F,) for vectors."""

    name: str
    shape: tuple[int, ...]


@dataclass
class _Affine:
    """A linear op (conv or dense) still open for folding: y = W x + b, per output channel."""

    layer: _Layer
    op: str  # "Conv" or "Gemm"
    weight: np.ndarray  # float64; Conv: OIHW, Gemm: (out, in)
    bias: np.ndarray  # float64, (out,)
    attrs: dict[str, Any]
    input: str
    prefix_nodes: list[onnx.NodeProto] = field(default_factory=list)  # e.g. the depthwise part


def _layer_list(config: dict[str, Any]) -> tuple[list[_Layer], list[str], list[str]]:
    if config.get("class_name") not in ("Functional", "Model"):
        raise KerasConversionError(
            f"only functional models are supported, this file holds a {config.get('class_name')!r}"
        )
    body = config["config"]
    layers = []
    for raw in body["layers"]:
        nodes = raw.get("inbound_nodes", [])
        if len(nodes) > 1:
            raise KerasConversionError(f"layer {raw['name']!r} is shared (called {len(nodes)} times)")
        inputs: list[str] = []
        if nodes:
            if not isinstance(nodes[0], list):
                raise KerasConversionError(f"layer {raw['name']!r}: unknown inbound_nodes format (Keras 3?)")
            for inbound in nodes[0]:
                if inbound[1] != 0 or inbound[2] != 0:
                    raise KerasConversionError(f"layer {raw['name']!r}: multi-output inbound {inbound[:3]}")
                inputs.append(inbound[0])
        layers.append(_Layer(raw["name"], raw["class_name"], raw["config"], inputs))
    ins = [entry[0] for entry in body["input_layers"]]
    outs = [entry[0] for entry in body["output_layers"]]
    return layers, ins, outs


def _weights(group: h5py.Group, layer: str) -> dict[str, np.ndarray]:
    """Weights of one layer keyed by their short name (kernel, bias, gamma, moving_mean, ...)."""
    if layer not in group:
        return {}
    g = group[layer]
    out = {}
    for raw in g.attrs.get("weight_names", []):
        path = raw.decode() if isinstance(raw, bytes) else str(raw)
        short = path.rsplit("/", 1)[-1].split(":", 1)[0]
        out[short] = np.asarray(g[path], dtype=np.float64)
    return out


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'same': output ceil(size/stride); the odd pixel of padding goes to the end."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _window(cfg: dict[str, Any], shape: tuple[int, ...], kernel: list[int], name: str) -> dict[str, Any]:
    """ONNX strides/pads/dilations for a Keras 2-D window op on an input of shape (C, H, W)."""
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise KerasConversionError(f"layer {name!r}: data_format {cfg['data_format']!r} is not supported")
    strides = list(cfg.get("strides") or kernel)
    dilations = list(cfg.get("dilation_rate", [1, 1]))
    padding = cfg.get("padding", "valid")
    if padding == "valid":
        pads = [0, 0, 0, 0]
    elif padding == "same":
        (t, b), (left, r) = (_same_pads(shape[i + 1], kernel[i], strides[i], dilations[i]) for i in range(2))
        pads = [t, left, b, r]
    else:
        raise KerasConversionError(f"layer {name!r}: padding {padding!r} is not supported")
    return {"kernel_shape": list(kernel), "strides": strides, "pads": pads, "dilations": dilations}


def _out_hw(shape: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, int]:
    out = []
    for i in range(2):
        effective = (attrs["kernel_shape"][i] - 1) * attrs["dilations"][i] + 1
        padded = shape[i + 1] + attrs["pads"][i] + attrs["pads"][i + 2]
        out.append((padded - effective) // attrs["strides"][i] + 1)
    return out[0], out[1]


def _channel_axis(axis: Any, rank: int, name: str) -> None:
    """Only the Keras channel axis (last) is supported for BatchNormalization / Concatenate / Softmax."""
    if isinstance(axis, list):
        if len(axis) != 1:
            raise KerasConversionError(f"layer {name!r}: axis {axis} is not supported")
        axis = axis[0]
    if axis not in (-1, rank):  # rank counts the batch axis out, so the last Keras axis is `rank`
        raise KerasConversionError(f"layer {name!r}: only the channel axis is supported, got axis {axis}")


def _lambda_scale(layer: _Layer) -> float:
    """The factor of a `lambda x, <arg>: x * <arg>` layer, read from its arguments."""
    cfg = layer.config
    args = cfg.get("arguments") or {}
    numbers = {k: v for k, v in args.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if cfg.get("function_type") != "lambda" or len(args) != 1 or len(numbers) != 1 or len(layer.inputs) != 1:
        raise KerasConversionError(
            f"Lambda layer {layer.name!r} is not a single-argument scale (arguments {args}); "
            "only `lambda x, scale: x * scale` is supported"
        )
    ((arg_name, value),) = numbers.items()
    function = cfg.get("function")
    code = function[0] if isinstance(function, list) else function
    # The function is marshalled Python bytecode; we never load it, but it must at least name the argument.
    if not isinstance(code, str) or arg_name.encode() not in base64.b64decode(code):
        raise KerasConversionError(f"Lambda layer {layer.name!r}: its function does not use {arg_name!r}")
    return float(value)


class _Builder:
    def __init__(self, weights: h5py.Group) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.tensors: dict[str, _Tensor] = {}

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # ---- linear layers (kept open so a following BatchNormalization or scale can fold in) ----

    def affine(self, layer: _Layer, x: _Tensor) -> _Affine:
        cfg, w = layer.config, _weights(self.weights, layer.name)
        kind = layer.kind
        if kind == "Dense":
            if len(x.shape) != 1:
                raise KerasConversionError(f"Dense layer {layer.name!r} on a rank-{len(x.shape)} input")
            kernel = w["kernel"]  # (in, out)
            bias = w.get("bias", np.zeros(kernel.shape[1]))
            return _Affine(layer, "Gemm", kernel.T.copy(), bias, {"transB": 1}, x.name)
        if len(x.shape) != 3:
            raise KerasConversionError(f"{kind} layer {layer.name!r} needs an image input")
        if kind == "Conv2D":
            kernel = w["kernel"]  # (kh, kw, in/groups, out)
            attrs = _window(cfg, x.shape, list(kernel.shape[:2]), layer.name)
            attrs["group"] = int(cfg.get("groups", 1))
            bias = w.get("bias", np.zeros(kernel.shape[3]))
            return _Affine(layer, "Conv", kernel.transpose(3, 2, 0, 1), bias, attrs, x.name)
        if kind in ("DepthwiseConv2D", "SeparableConv2D"):
            depthwise = w["depthwise_kernel"]  # (kh, kw, in, multiplier)
            kh, kw, cin, mult = depthwise.shape
            attrs = _window(cfg, x.shape, [kh, kw], layer.name)
            attrs["group"] = cin
            # Keras orders depthwise outputs channel-major (c * mult + m), as ONNX grouped conv does.
            dw = depthwise.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None, :, :]
            if kind == "DepthwiseConv2D":
                bias = w.get("bias", np.zeros(cin * mult))
                return _Affine(layer, "Conv", dw, bias, attrs, x.name)
            dw_out = f"{layer.name}/depthwise"
            prefix = [
                helper.make_node(
                    "Conv",
                    [x.name, self.const(f"{layer.name}/depthwise_kernel", dw)],
                    [dw_out],
                    name=dw_out,
                    **attrs,
                )
            ]
            pointwise = w["pointwise_kernel"]  # (1, 1, in*mult, out)
            bias = w.get("bias", np.zeros(pointwise.shape[3]))
            pw_attrs = {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1]}
            pw_attrs["group"] = 1
            # The pointwise conv keeps the depthwise output size: record it in the attrs' strides/pads.
            affine = _Affine(layer, "Conv", pointwise.transpose(3, 2, 0, 1), bias, pw_attrs, dw_out, prefix)
            affine.attrs["_spatial_from"] = attrs
            return affine
        raise AssertionError(kind)

    def fold_batchnorm(self, affine: _Affine, bn: _Layer) -> None:
        cfg, w = bn.config, _weights(self.weights, bn.name)
        _channel_axis(cfg.get("axis", -1), 3 if affine.op == "Conv" else 1, bn.name)
        scale, shift = self.batchnorm_params(bn.name, cfg, w)
        # y = (W x + b) * s + t  ==  (s W) x + (s b + t), with s and t per output channel.
        affine.weight = affine.weight * scale.reshape(-1, *([1] * (affine.weight.ndim - 1)))
        affine.bias = affine.bias * scale + shift

    @staticmethod
    def batchnorm_params(name: str, cfg: dict[str, Any], w: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Keras inference BN, (x - mean) / sqrt(var + eps) * gamma + beta, as x * s + t."""
        mean, var = w["moving_mean"], w["moving_variance"]
        gamma = w["gamma"] if cfg.get("scale", True) else np.ones_like(mean)
        beta = w["beta"] if cfg.get("center", True) else np.zeros_like(mean)
        scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
        return scale, beta - mean * scale

    def emit_affine(self, affine: _Affine, x: _Tensor, activation: str) -> _Tensor:
        name = affine.layer.name
        self.nodes.extend(affine.prefix_nodes)
        weight = self.const(f"{name}/weight", affine.weight)
        bias = self.const(f"{name}/bias", affine.bias)
        attrs = {k: v for k, v in affine.attrs.items() if not k.startswith("_")}
        out = name if activation == "linear" else f"{name}/preact"
        self.node(affine.op, [affine.input, weight, bias], out, **attrs)
        if affine.op == "Gemm":
            shape: tuple[int, ...] = (affine.weight.shape[0],)
        else:
            h, w = _out_hw(x.shape, affine.attrs.get("_spatial_from", affine.attrs))
            shape = (affine.weight.shape[0], h, w)
        result = _Tensor(out, shape)
        if activation != "linear":
            result = self.activation(activation, result, name)
        return result

    # ---- everything else ----

    def activation(self, kind: str, x: _Tensor, name: str) -> _Tensor:
        if kind == "linear":
            return x
        if kind == "softmax":
            # Keras softmax runs over the last (channel) axis, which is axis 1 in NCHW as in (N, F).
            return _Tensor(self.node("Softmax", [x.name], name, axis=1), x.shape)
        ops = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
        if kind not in ops:
            raise KerasConversionError(f"layer {name!r}: activation {kind!r} is not supported")
        return _Tensor(self.node(ops[kind], [x.name], name), x.shape)

    def simple(self, layer: _Layer, xs: list[_Tensor]) -> _Tensor:
        cfg, name, kind = layer.config, layer.name, layer.kind
        x = xs[0]
        if kind == "Activation":
            return self.activation(cfg["activation"], x, name)
        if kind == "ReLU":
            if cfg.get("negative_slope", 0) or cfg.get("threshold", 0) or cfg.get("max_value") is not None:
                raise KerasConversionError(f"ReLU layer {name!r}: only the plain ReLU is supported")
            return _Tensor(self.node("Relu", [x.name], name), x.shape)
        if kind == "Dropout":
            return x  # identity at inference
        if kind == "BatchNormalization":
            _channel_axis(cfg.get("axis", -1), len(x.shape), name)
            scale, shift = self.batchnorm_params(name, cfg, _weights(self.weights, name))
            bshape = (-1, 1, 1) if len(x.shape) == 3 else (-1,)
            mul = self.node(
                "Mul", [x.name, self.const(f"{name}/scale", scale.reshape(bshape))], f"{name}/mul"
            )
            return _Tensor(
                self.node("Add", [mul, self.const(f"{name}/shift", shift.reshape(bshape))], name), x.shape
            )
        if kind == "Lambda":
            factor = _lambda_scale(layer)
            return _Tensor(
                self.node("Mul", [x.name, self.const(f"{name}/scale", np.array(factor))], name), x.shape
            )
        if kind in ("MaxPooling2D", "AveragePooling2D"):
            attrs = _window(cfg, x.shape, list(cfg["pool_size"]), name)
            if attrs.pop("dilations") != [1, 1]:
                raise KerasConversionError(f"layer {name!r}: dilated pooling is not supported")
            if kind == "AveragePooling2D":
                attrs["count_include_pad"] = 0  # TF 'same' averages over the real pixels only
            h, w = _out_hw(x.shape, {**attrs, "dilations": [1, 1]})
            op = "MaxPool" if kind == "MaxPooling2D" else "AveragePool"
            return _Tensor(self.node(op, [x.name], name, **attrs), (x.shape[0], h, w))
        if kind in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            if len(x.shape) != 3:
                raise KerasConversionError(f"layer {name!r} needs an image input")
            op = "GlobalAveragePool" if kind == "GlobalAveragePooling2D" else "GlobalMaxPool"
            if cfg.get("keepdims", False):
                return _Tensor(self.node(op, [x.name], name), (x.shape[0], 1, 1))
            pooled = self.node(op, [x.name], f"{name}/pool")
            return _Tensor(self.node("Flatten", [pooled], name, axis=1), (x.shape[0],))
        if kind == "Flatten":
            if len(x.shape) == 1:
                return x
            # Keras flattens NHWC order: go back to channels-last first so a following Dense matches.
            nhwc = self.node("Transpose", [x.name], f"{name}/nhwc", perm=[0, 2, 3, 1])
            return _Tensor(self.node("Flatten", [nhwc], name, axis=1), (int(np.prod(x.shape)),))
        if kind == "Add":
            if any(t.shape != x.shape for t in xs):
                raise KerasConversionError(f"Add layer {name!r}: shapes differ {[t.shape for t in xs]}")
            out = x.name
            for i, other in enumerate(xs[1:], 1):
                out = self.node("Add", [out, other.name], name if i == len(xs) - 1 else f"{name}/{i}")
            return _Tensor(out, x.shape)
        if kind == "Concatenate":
            _channel_axis(cfg.get("axis", -1), len(x.shape), name)
            if any(t.shape[1:] != x.shape[1:] for t in xs):
                raise KerasConversionError(
                    f"Concatenate layer {name!r}: shapes differ {[t.shape for t in xs]}"
                )
            shape = (sum(t.shape[0] for t in xs), *x.shape[1:])
            return _Tensor(self.node("Concat", [t.name for t in xs], name, axis=1), shape)
        raise KerasConversionError(f"layer {name!r}: Keras layer type {kind!r} is not supported")


_AFFINE = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"}


def _to_model(model_config: dict[str, Any], weights: h5py.Group) -> onnx.ModelProto:
    layers, inputs, outputs = _layer_list(model_config)
    if len(inputs) != 1 or len(outputs) != 1:
        raise KerasConversionError(f"one input and one output expected, got {inputs} -> {outputs}")
    by_name = {layer.name: layer for layer in layers}
    consumers: dict[str, list[str]] = {layer.name: [] for layer in layers}
    for layer in layers:
        for src in layer.inputs:
            consumers[src].append(layer.name)

    def sole_consumer(name: str) -> _Layer | None:
        # A layer that is a model output, or feeds several layers, must keep its own value.
        if name in outputs or len(consumers[name]) != 1:
            return None
        return by_name[consumers[name][0]]

    b = _Builder(weights)
    done: dict[str, _Tensor] = {}  # Keras layer name -> the ONNX value that stands for its output
    graph_input: onnx.ValueInfoProto | None = None
    for layer in layers:  # Keras writes functional configs in topological order
        if layer.name in done:
            continue  # folded into an earlier layer
        missing = [src for src in layer.inputs if src not in done]
        if missing:
            raise KerasConversionError(f"layer {layer.name!r} comes before its inputs {missing}")
        xs = [done[src] for src in layer.inputs]
        if layer.kind == "InputLayer":
            shape = layer.config.get("batch_input_shape") or layer.config.get("batch_shape")
            if shape is None or len(shape) != 4 or None in shape[1:]:
                raise KerasConversionError(
                    f"input {layer.name!r}: a fixed NHWC image shape is needed, got {shape}"
                )
            _, h, w, c = shape
            graph_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", c, h, w])
            done[layer.name] = _Tensor(INPUT_NAME, (c, h, w))
            continue
        if layer.kind not in _AFFINE:
            done[layer.name] = b.simple(layer, xs)
            continue
        affine = b.affine(layer, xs[0])
        activation = layer.config.get("activation", "linear")
        last = layer.name
        # Fold a chain of BatchNormalization / scale Lambda layers that only this layer feeds.
        while activation == "linear" and (nxt := sole_consumer(last)) is not None:
            if nxt.kind == "BatchNormalization":
                b.fold_batchnorm(affine, nxt)
            elif nxt.kind == "Lambda":
                factor = _lambda_scale(nxt)
                affine.weight, affine.bias = affine.weight * factor, affine.bias * factor
            else:
                break
            last = nxt.name
        out = b.emit_affine(affine, xs[0], activation)
        done[layer.name] = out
        for folded in _chain(layer.name, last, sole_consumer):
            done[folded] = out

    assert graph_input is not None
    result = done[outputs[0]]
    b.node("Identity", [result.name], OUTPUT_NAME)
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", *result.shape])
    graph = helper.make_graph(b.nodes, "keras_h5", [graph_input], [output], b.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facequeue"
    )
    model.ir_version = IR_VERSION
    return model


def _chain(first: str, last: str, sole_consumer: Any) -> list[str]:
    names, name = [], first
    while name != last:
        name = sole_consumer(name).name
        names.append(name)
    return names


def convert(src: Path, dst: Path) -> None:
    """Convert the Keras HDF5 model at `src` to an ONNX file at `dst` (input NCHW float32 [N, C, H, W])."""
    with h5py.File(src, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise KerasConversionError(f"{src} has no model_config attribute (weights-only file?)")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        weights = f.get("model_weights", f)
        model = _to_model(config, weights)
        keras_version = f.attrs.get("keras_version", b"")
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    version = keras_version.decode() if isinstance(keras_version, bytes) else str(keras_version)
    helper.set_model_props(model, {"source_sha256": digest, "source_keras_version": version})
    onnx.checker.check_model(model)
    Path(dst).write_bytes(model.SerializeToString())
