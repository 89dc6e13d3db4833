"""dlib DNN (`dlib::serialize(net)` file) → ONNX.

Written from dlib's serialisation rules (dlib/serialize.h, dlib/dnn/core.h, layers.h, input.h, loss.h):

* integers are a control byte (low 4 bits = byte count, 0x80 = negative) then little-endian bytes;
* floats are dlib's portable form: an integer mantissa then an integer exponent (value = m * 2**e);
* strings are an integer length then the bytes; bools are the ASCII bytes '0' / '1';
* tensors are int version 2, four int dimensions (n, k, nr, nc), then raw little-endian float32.

A network is nested types: `add_loss_layer` writes its version, the loss details, then its subnetwork;
every `add_layer` writes its version, its *subnetwork first*, then its own details (a name string such
as "con_6" followed by that layer's fields) and some training state. So the file reads outside-in as
a run of version numbers down to the input layer, then inside-out the layer details. `tag` and `skip`
layers only write a version and their subnetwork, and tag ids are compile-time only: we resolve them by
dlib's residual idioms (see `_build_graph`). The ONNX graph takes raw RGB values (0..255, float32,
NCHW) and does the input layer's mean subtraction and /256 itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class DlibFormatError(ValueError):
    """The file is not a dlib DNN we can read or convert."""


@dataclass
class Layer:
    kind: str  # dlib layer name without version suffix ("con", "affine", ...); "marker" = tag or skip
    fields: dict = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: str
    input_kind: str
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]  # rows, cols
    layers: list[Layer]  # input side first


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, msg: str) -> DlibFormatError:
        return DlibFormatError(f"{msg} (at byte {self.pos})")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        ctrl = self.data[self.pos]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        if len(raw) != size:
            raise self.fail("unexpected end of file")
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float format is not supported")
        mantissa = self.int()
        exponent = self.int()
        # Special exponents used by dlib's float_details for inf, -inf and NaN.
        if exponent >= 32000:
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.int()
        raw = self.data[self.pos : self.pos + n]
        if len(raw) != n:
            raise self.fail("unexpected end of file in a string")
        self.pos += n
        return raw.decode("latin-1")

    def bool(self) -> bool:
        ch = self.data[self.pos : self.pos + 1]
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {ch!r}")
        self.pos += 1
        return ch == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"unexpected tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise self.fail("unexpected end of file in a tensor")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos = end
        return arr.astype(np.float32)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"unexpected alias_tensor version {version}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def peek_name(self) -> str | None:
        """The string at the current position if it looks like a layer name, else None; never moves."""
        start = self.pos
        try:
            n = self.int()
            raw = self.data[self.pos : self.pos + n]
        except DlibFormatError:
            return None
        finally:
            self.pos = start
        if 3 <= n <= 64 and len(raw) == n and all(c == 95 or 48 <= c <= 57 or 97 <= c <= 122 for c in raw):
            return raw.decode("ascii")
        return None


def _read_layer(r: _Reader) -> Layer:
    """One layer's details, starting at its name string."""
    at = r.pos
    name = r.string()
    if name in ("con_4", "con_5", "con_6"):
        params = r.tensor().ravel()
        f: dict = {"num_filters": r.int(), "nr": r.int(), "nc": r.int()}
        f |= {"stride_y": r.int(), "stride_x": r.int(), "pad_y": r.int(), "pad_x": r.int()}
        filt = r.alias_tensor()
        bias = r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        use_bias = r.bool() if name != "con_4" else True
        f["relu"] = r.bool() if name == "con_6" else False  # fused by dlib's fuse_layers visitor
        nw = int(np.prod(filt))
        f["weight"] = params[:nw].reshape(filt)
        f["bias"] = params[nw : nw + filt[0]] if use_bias and int(np.prod(bias)) else None
        return Layer("con", f)
    if name in ("affine_", "affine_2"):
        params = r.tensor().ravel()
        gamma = r.alias_tensor()
        r.alias_tensor()  # beta has gamma's shape
        mode = r.int()
        disabled = r.bool() if name == "affine_2" else False
        if mode != 0:
            raise DlibFormatError(f"affine layer in FC mode is not supported (at byte {at})")
        n = int(np.prod(gamma))
        return Layer("affine", {"gamma": params[:n], "beta": params[n : 2 * n], "disabled": disabled})
    if name in ("relu_", "relu_2"):
        return Layer("relu", {"disabled": r.bool() if name == "relu_2" else False})
    if name in ("max_pool_2", "avg_pool_2"):
        f = {"nr": r.int(), "nc": r.int(), "stride_y": r.int(), "stride_x": r.int()}
        f |= {"pad_y": r.int(), "pad_x": r.int()}
        return Layer(name[:-2], f)
    if name == "add_prev_":
        return Layer("add_prev")
    if name in ("fc_2", "fc_3"):
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor().ravel()
        r.alias_tensor()
        r.alias_tensor()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        use_bias = r.bool() if name == "fc_3" else True
        nw = num_inputs * num_outputs
        weight = params[:nw].reshape(num_inputs, num_outputs)
        has_bias = bias_mode == 0 and use_bias
        bias = params[nw : nw + num_outputs] if has_bias else None
        return Layer("fc", {"weight": weight, "bias": bias})
    raise DlibFormatError(f"unsupported dlib layer {name!r} (at byte {at})")


def _read_training_state(r: _Reader, *tensors: str) -> None:
    """Bools and tensors an add_layer keeps for training; read and dropped."""
    for _ in range(3):
        r.bool()
    for _ in tensors:
        r.tensor()


def parse(data: bytes) -> DlibNet:
    r = _Reader(data)
    try:
        if r.int() != 1:
            raise r.fail("bad add_loss_layer version")
        loss = r.string()
    except DlibFormatError as error:
        raise DlibFormatError(f"not a dlib DNN file: it does not start with a loss layer ({error})") from None
    if loss == "loss_metric_2":
        r.float()  # margin
        r.float()  # distance threshold
    elif loss != "loss_metric_":
        raise DlibFormatError(f"unsupported dlib loss layer {loss!r}")

    # Outside-in: the version of every wrapper down to the one that holds the input layer.
    versions: list[int] = []
    while True:
        versions.append(r.int())
        name = r.peek_name()
        if name is not None and name.startswith("input"):
            break
        if len(versions) > 100_000:
            raise r.fail("no input layer found")

    input_kind = r.string()
    if input_kind != "input_rgb_image_sized":
        raise DlibFormatError(f"unsupported dlib input layer {input_kind!r}")
    mean_rgb = (r.float(), r.float(), r.float())
    input_size = (r.int(), r.int())

    layers: list[Layer] = []
    innermost = versions.pop()
    name = r.peek_name()
    if name is not None:  # add_layer<LAYER, input>: details, state, then version 3 adds a sample factor
        if innermost not in (2, 3):
            raise r.fail(f"unexpected add_layer version {innermost}")
        layers.append(_read_layer(r))
        _read_training_state(r, "x_grad", "cached_output", "grad_final")
        if innermost == 3:
            r.int()
    else:  # add_tag_layer<ID, input>: cached_output, grad_final, a bool, then version 2 adds a factor
        r.tensor()
        r.tensor()
        r.bool()
        if innermost == 2:
            r.int()
        layers.append(Layer("marker"))

    # Inside-out: version 2 is an add_layer (details + training state); version 1 a tag or skip.
    for v in reversed(versions):
        if v == 2:
            layers.append(_read_layer(r))
            _read_training_state(r, "x_grad", "cached_output", "params_grad")
        elif v == 1:
            layers.append(Layer("marker"))
        else:
            raise r.fail(f"unexpected layer wrapper version {v}")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} trailing bytes after the network")
    return DlibNet(loss, input_kind, mean_rgb, input_size, layers)


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _pool_out(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def _build_graph(net: DlibNet) -> onnx.ModelProto:
    """Layers → ONNX nodes, tracking the (C, H, W) shape so zero-padded adds can be emitted.

    Tags and skips look the same in the file, so markers are resolved by dlib's residual idioms:
    `add_prev<block<tag<X>>>` and `add_prev<avg_pool<skip<tag<block<tag<X>>>>>>`. A marker pushes the
    current tensor on a tag stack, except a marker directly on top of another marker, which is a skip:
    it jumps back to the tag below the one just pushed and drops it. `add_prev` adds the top tag.
    """
    g = _Graph()
    rows, cols = net.input_size
    x = "input"
    mean = np.asarray(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = g.op("Sub", [x, g.const("mean_rgb", mean)])
    x = g.op("Mul", [x, g.const("scale", np.array(1.0 / 256.0, np.float32))])
    shape = (3, rows, cols)

    tags: list[tuple[str, tuple[int, int, int]]] = []
    layers = net.layers
    prev_kind = ""
    i = 0
    while i < len(layers):
        layer = layers[i]
        f = layer.fields
        if layer.kind == "marker":
            if prev_kind == "marker":
                if len(tags) < 2:
                    raise DlibFormatError("skip layer with no tag beneath it")
                x, shape = tags.pop(-2)
            else:
                tags.append((x, shape))
        elif layer.kind == "con":
            w, b = f["weight"], f["bias"]
            if w.shape[1] != shape[0]:
                raise DlibFormatError(f"con expects {w.shape[1]} channels, got {shape[0]}")
            b = np.zeros(w.shape[0], np.float32) if b is None else b
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            # Fold a following affine into the conv: valid when nothing else reads the conv output
            # (no marker in between) and no relu sits between them.
            if nxt is not None and nxt.kind == "affine" and not f["relu"] and not nxt.fields["disabled"]:
                gamma, beta = nxt.fields["gamma"], nxt.fields["beta"]
                w = w * gamma[:, None, None, None]
                b = b * gamma + beta
                i += 1
            pads = [f["pad_y"], f["pad_x"], f["pad_y"], f["pad_x"]]
            x = g.op(
                "Conv",
                [x, g.const("w", w.astype(np.float32)), g.const("b", b.astype(np.float32))],
                kernel_shape=[f["nr"], f["nc"]],
                strides=[f["stride_y"], f["stride_x"]],
                pads=pads,
            )
            shape = (
                w.shape[0],
                _pool_out(shape[1], f["nr"], f["stride_y"], f["pad_y"]),
                _pool_out(shape[2], f["nc"], f["stride_x"], f["pad_x"]),
            )
            if f["relu"]:
                x = g.op("Relu", [x])
        elif layer.kind == "affine":
            if not f["disabled"]:
                k = shape[0]
                x = g.op("Mul", [x, g.const("gamma", f["gamma"].reshape(1, k, 1, 1))])
                x = g.op("Add", [x, g.const("beta", f["beta"].reshape(1, k, 1, 1))])
        elif layer.kind == "relu":
            if not f["disabled"]:
                x = g.op("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            if f["nr"] == 0 and f["nc"] == 0:  # dlib's "pool everything"
                x = g.op("GlobalMaxPool" if layer.kind == "max_pool" else "GlobalAveragePool", [x])
                shape = (shape[0], 1, 1)
            elif f["nr"] == 0 or f["nc"] == 0:
                raise DlibFormatError("pooling over whole rows or columns only is not supported")
            else:
                attrs = {
                    "kernel_shape": [f["nr"], f["nc"]],
                    "strides": [f["stride_y"], f["stride_x"]],
                    "pads": [f["pad_y"], f["pad_x"], f["pad_y"], f["pad_x"]],
                }
                if layer.kind == "avg_pool":
                    # dlib averages over the window clipped to the image: padding is not counted.
                    x = g.op("AveragePool", [x], count_include_pad=0, **attrs)
                else:
                    x = g.op("MaxPool", [x], **attrs)
                shape = (
                    shape[0],
                    _pool_out(shape[1], f["nr"], f["stride_y"], f["pad_y"]),
                    _pool_out(shape[2], f["nc"], f["stride_x"], f["pad_x"]),
                )
        elif layer.kind == "add_prev":
            if not tags:
                raise DlibFormatError("add_prev layer with no tag to add")
            y, yshape = tags.pop()
            # dlib adds tensors of different sizes as if the smaller were zero-padded at the end.
            out_shape = tuple(max(a, b) for a, b in zip(shape, yshape, strict=True))
            x = g.op("Add", [_pad_to(g, x, shape, out_shape), _pad_to(g, y, yshape, out_shape)])
            shape = out_shape
        elif layer.kind == "fc":
            w, b = f["weight"], f["bias"]
            if w.shape[0] != int(np.prod(shape)):
                raise DlibFormatError(f"fc expects {w.shape[0]} inputs, got {int(np.prod(shape))}")
            x = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [x, g.const("fc_w", w)])
            if b is not None:
                x = g.op("Add", [x, g.const("fc_b", b)])
            shape = (w.shape[1],)
        else:
            raise DlibFormatError(f"unsupported layer {layer.kind!r}")
        prev_kind = layer.kind
        i += 1

    if len(shape) != 1:
        raise DlibFormatError(f"network ends with a {shape} tensor, not a vector (no fc layer?)")
    g.nodes.append(helper.make_node("Identity", [x], ["descriptor"], name="descriptor"))
    graph = helper.make_graph(
        g.nodes,
        "dlib_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, rows, cols])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", shape[0]])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by onnxruntime releases well before the one pinned
    model.producer_name = "facequeue.dlib_dnn"
    model.doc_string = (
        f"Converted from a dlib {net.loss} network. Input: RGB 0..255 as float32 NCHW "
        f"{rows}x{cols}; mean {net.mean_rgb} subtracted and /256 in the graph."
    )
    onnx.checker.check_model(model)
    return model


def _pad_to(g: _Graph, x: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
    extra = [t - s for s, t in zip(shape, target, strict=True)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], mode="constant")


def convert(src: Path, dst: Path) -> None:
    net = parse(Path(src).read_bytes())
    model = _build_graph(net)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, tmp)
    tmp.replace(dst)
