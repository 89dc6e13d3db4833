"""Keras HDF5 -> ONNX converter against a plain numpy reading of the same Keras file.

Small Keras files are written here with h5py (Keras 2 layout: `model_config` JSON + `model_weights`), so
the layer semantics (TF 'same' padding, BatchNormalization and scale folding, separable convolutions,
pooling) are checked without TensorFlow. The real FaceNet and fer models are checked against Keras itself
in test_facenet.py and test_emotion.py; `keras_forward_numpy` here is also their numpy reference.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workers.models.convert import keras_h5
from workers.models.registry import MODELS

# ---------------------------------------------------------------------------------------------------------
# numpy reference: reads the Keras config and runs it in NHWC, float64, layer by layer, nothing folded.


def _same(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2  # TF puts the odd pixel at the bottom / right


def _pad(x: np.ndarray, cfg: dict[str, Any], k: tuple[int, int], value: float = 0.0) -> np.ndarray:
    if cfg.get("padding", "valid") == "valid":
        return x
    s, d = cfg.get("strides") or k, cfg.get("dilation_rate", [1, 1])
    (t, b), (left, r) = _same(x.shape[1], k[0], s[0], d[0]), _same(x.shape[2], k[1], s[1], d[1])
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], s: list[int], d: list[int]):
    """Yield (i, j, slice of x) for every kernel tap: x[:, i*d + s*oy, j*d + s*ox, :]."""
    oh = (x.shape[1] - (k[0] - 1) * d[0] - 1) // s[0] + 1
    ow = (x.shape[2] - (k[1] - 1) * d[1] - 1) // s[1] + 1
    for i in range(k[0]):
        for j in range(k[1]):
            y0, x0 = i * d[0], j * d[1]
            yield i, j, x[:, y0 : y0 + s[0] * (oh - 1) + 1 : s[0], x0 : x0 + s[1] * (ow - 1) + 1 : s[1], :]


def _conv(x: np.ndarray, kernel: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    k = kernel.shape[:2]
    s, d = cfg.get("strides", [1, 1]), cfg.get("dilation_rate", [1, 1])
    return sum(win @ kernel[i, j] for i, j, win in _windows(_pad(x, cfg, k), k, s, d))


def _depthwise(x: np.ndarray, kernel: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    k = kernel.shape[:2]
    s, d = cfg.get("strides", [1, 1]), cfg.get("dilation_rate", [1, 1])
    out = sum(win[..., None] * kernel[i, j] for i, j, win in _windows(_pad(x, cfg, k), k, s, d))
    return out.reshape(*out.shape[:3], -1)  # channel c, multiplier m -> c * M + m


def _activation(x: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    assert name == "linear", name
    return x


def keras_forward_numpy(path: Path, x: np.ndarray) -> np.ndarray:
    """Run the Keras HDF5 model at `path` on NHWC input `x` with numpy (float64)."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        group = f["model_weights"]
        values: dict[str, np.ndarray] = {}
        for layer in config["config"]["layers"]:
            name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
            ins = [values[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            w = {}
            if name in group:
                for raw in group[name].attrs.get("weight_names", []):
                    wname = raw.decode() if isinstance(raw, bytes) else raw
                    w[wname.split("/")[-1].split(":")[0]] = np.asarray(group[name][wname], np.float64)
            if kind == "InputLayer":
                out = x.astype(np.float64)
            elif kind in ("Conv2D", "Dense", "SeparableConv2D", "DepthwiseConv2D"):
                if kind == "Conv2D":
                    out = _conv(ins[0], w["kernel"], cfg)
                elif kind == "Dense":
                    out = ins[0] @ w["kernel"]
                else:
                    out = _depthwise(ins[0], w["depthwise_kernel"], cfg)
                    if kind == "SeparableConv2D":
                        out = out @ w["pointwise_kernel"][0, 0]
                out = _activation(out + w.get("bias", 0.0), cfg.get("activation", "linear"))
            elif kind == "BatchNormalization":
                gamma = w["gamma"] if cfg.get("scale", True) else 1.0
                beta = w["beta"] if cfg.get("center", True) else 0.0
                out = (ins[0] - w["moving_mean"]) / np.sqrt(
                    w["moving_variance"] + cfg["epsilon"]
                ) * gamma + beta
            elif kind == "Activation":
                out = _activation(ins[0], cfg["activation"])
            elif kind == "Lambda":
                (scale,) = cfg["arguments"].values()
                out = ins[0] * scale
            elif kind == "MaxPooling2D":
                k = tuple(cfg["pool_size"])
                padded = _pad(ins[0], cfg, k, -np.inf)
                out = np.max([win for _, _, win in _windows(padded, k, cfg["strides"], [1, 1])], axis=0)
            elif kind == "AveragePooling2D":
                k = tuple(cfg["pool_size"])
                total = sum(win for _, _, win in _windows(_pad(ins[0], cfg, k), k, cfg["strides"], [1, 1]))
                ones = _pad(np.ones_like(ins[0][:1, ..., :1]), cfg, k)
                count = sum(win for _, _, win in _windows(ones, k, cfg["strides"], [1, 1]))
                out = total / count  # TF averages over the real pixels only
            elif kind == "GlobalAveragePooling2D":
                out = ins[0].mean(axis=(1, 2), keepdims=cfg.get("keepdims", False))
            elif kind == "Add":
                out = sum(ins)
            elif kind == "Concatenate":
                out = np.concatenate(ins, axis=-1)
            elif kind == "Flatten":
                out = ins[0].reshape(len(ins[0]), -1)
            elif kind == "Dropout":
                out = ins[0]
            else:
                raise NotImplementedError(kind)
            values[name] = out
        return values[config["config"]["output_layers"][0][0]]


# ---------------------------------------------------------------------------------------------------------
# A tiny Keras 2 HDF5 writer.

_SCALE_FN = base64.b64encode(marshal.dumps((lambda x, scale: x * scale).__code__)).decode()


class KerasFile:
    def __init__(self, height: int, width: int, channels: int) -> None:
        self.layers: list[dict[str, Any]] = []
        self.weights: dict[str, dict[str, np.ndarray]] = {}
        self.rng = np.random.default_rng(0)
        self.channels: dict[str, int] = {}
        self.add("InputLayer", "input_1", [], batch_input_shape=[None, height, width, channels])
        self.channels["input_1"] = channels

    def add(self, kind: str, name: str, inputs: list[str], weights: dict | None = None, **cfg: Any) -> str:
        nodes = [[[src, 0, 0, {}] for src in inputs]] if inputs else []
        self.layers.append(
            {"class_name": kind, "name": name, "config": {"name": name, **cfg}, "inbound_nodes": nodes}
        )
        if weights:
            self.weights[name] = weights
        return name

    def w(self, *shape: int, scale: float = 0.3) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def conv(self, name: str, src: str, cin: int, filters: int, k: int, bias: bool = True, **cfg: Any) -> str:
        weights = {"kernel": self.w(k, k, cin, filters)}
        if bias:
            weights["bias"] = self.w(filters)
        cfg = {"strides": [1, 1], "padding": "same", "activation": "linear", "use_bias": bias, **cfg}
        return self.add("Conv2D", name, [src], weights, kernel_size=[k, k], filters=filters, **cfg)

    def bn(self, name: str, src: str, n: int, axis: Any = -1, scale: bool = True, center: bool = True) -> str:
        weights = {
            "moving_mean": self.w(n),
            "moving_variance": self.rng.uniform(0.2, 2.0, n).astype(np.float32),
        }
        if scale:
            weights["gamma"] = self.rng.uniform(0.5, 1.5, n).astype(np.float32)
        if center:
            weights["beta"] = self.w(n)
        return self.add(
            "BatchNormalization", name, [src], weights, axis=axis, epsilon=0.001, scale=scale, center=center
        )

    def scale(self, name: str, src: str, factor: float) -> str:
        fn = [_SCALE_FN, None, None]
        return self.add(
            "Lambda", name, [src], function=fn, function_type="lambda", arguments={"scale": factor}
        )

    def save(self, path: Path, output: str) -> Path:
        config = {
            "class_name": "Functional",
            "config": {
                "name": "model",
                "layers": self.layers,
                "input_layers": [["input_1", 0, 0]],
                "output_layers": [[output, 0, 0]],
            },
        }
        with h5py.File(path, "w") as f:
            f.attrs["model_config"] = json.dumps(config)
            f.attrs["keras_version"] = "2.16.0"
            group = f.create_group("model_weights")
            for layer in self.layers:
                g = group.create_group(layer["name"])
                names = [f"{layer['name']}/{k}:0" for k in self.weights.get(layer["name"], {})]
                g.attrs["weight_names"] = np.array([n.encode() for n in names])
                for n, (_, value) in zip(names, self.weights.get(layer["name"], {}).items(), strict=True):
                    g.create_dataset(n, data=value)
        return path


def run_onnx(path: Path, x_nhwc: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2), dtype=np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


# ---------------------------------------------------------------------------------------------------------


def _inception_like(kf: KerasFile) -> str:
    """Stem, a scaled residual block, a reduction block, separable convs and a dense head."""
    x = kf.conv("stem", "input_1", 3, 8, 3, bias=False, strides=[2, 2], padding="valid")
    x = kf.bn("stem_bn", x, 8, axis=[3], scale=False)
    x = kf.add("Activation", "stem_relu", [x], activation="relu")
    b0 = kf.conv("b0", x, 8, 4, 1, activation="relu")  # activation inside the conv: no folding after it
    b1 = kf.conv("b1a", x, 8, 4, 1, bias=False)
    b1 = kf.bn("b1a_bn", b1, 4)
    b1 = kf.add("Activation", "b1a_relu", [b1], activation="relu")
    b1 = kf.conv("b1b", b1, 4, 4, 3, dilation_rate=[2, 2])
    cat = kf.add("Concatenate", "cat", [b0, b1], axis=3)
    up = kf.conv("up", cat, 8, 8, 1)
    up = kf.scale("up_scale", up, 0.17)
    x = kf.add("Add", "res", [x, up])
    x = kf.add("Activation", "res_relu", [x], activation="relu")
    pool = kf.add("MaxPooling2D", "pool", [x], pool_size=[3, 3], strides=[2, 2], padding="same")
    sep = kf.add(
        "SeparableConv2D", "sep", [x],
        {"depthwise_kernel": kf.w(3, 3, 8, 2), "pointwise_kernel": kf.w(1, 1, 16, 8), "bias": kf.w(8)},
        kernel_size=[3, 3], strides=[2, 2], padding="same", depth_multiplier=2, filters=8, activation="linear",
    )  # fmt: skip
    sep = kf.bn("sep_bn", sep, 8)
    x = kf.add("Add", "res2", [pool, sep])
    dw = kf.add(
        "DepthwiseConv2D", "dw", [x], {"depthwise_kernel": kf.w(2, 2, 8, 1)},
        kernel_size=[2, 2], strides=[1, 1], padding="valid", depth_multiplier=1, activation="relu",
    )  # fmt: skip
    avg = kf.add("AveragePooling2D", "avg", [dw], pool_size=[2, 2], strides=[2, 2], padding="same")
    avg = kf.bn("avg_bn", avg, 8)  # after a pooling: stays a Mul + Add
    gap = kf.add("GlobalAveragePooling2D", "gap", [avg], keepdims=False)
    drop = kf.add("Dropout", "drop", [gap], rate=0.2)
    dense = kf.add("Dense", "bottleneck", [drop], {"kernel": kf.w(8, 6)}, units=6, activation="linear")
    dense = kf.bn("bottleneck_bn", dense, 6, axis=[1], scale=False)
    return kf.add("Activation", "probs", [dense], activation="softmax")


def test_synthetic_network_matches_numpy(tmp_path: Path) -> None:
    kf = KerasFile(19, 22, 3)  # odd and even sizes: both 'same' padding cases
    src = kf.save(tmp_path / "m.h5", _inception_like(kf))
    dst = tmp_path / "m.onnx"
    keras_h5.convert(src, dst)
    x = np.random.default_rng(1).standard_normal((3, 19, 22, 3))
    want = keras_forward_numpy(src, x)
    got = run_onnx(dst, x)
    assert got.shape == want.shape == (3, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Batch 1 runs the same graph (dynamic batch axis).
    np.testing.assert_allclose(run_onnx(dst, x[:1]), want[:1], atol=1e-5)
    ops = _ops(dst)
    # All BatchNormalization and scale layers that follow a linear conv/dense are gone, the layout lives
    # in the weights (no Transpose), and only the BN after the pooling is left as Mul + Add.
    assert "Transpose" not in ops and "BatchNormalization" not in ops
    assert ops.count("Mul") == 1 and ops.count("Conv") == 8 and ops.count("Gemm") == 1


def test_same_padding_puts_the_extra_pixel_bottom_right(tmp_path: Path) -> None:
    kf = KerasFile(8, 7, 1)
    out = kf.conv("c", "input_1", 1, 2, 3, strides=[2, 2])
    src = kf.save(tmp_path / "m.h5", out)
    keras_h5.convert(src, tmp_path / "m.onnx")
    conv = next(n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Conv")
    pads = next(list(a.ints) for a in conv.attribute if a.name == "pads")
    assert pads == [0, 1, 1, 1]  # H 8 -> 4 needs 1 (bottom); W 7 -> 4 needs 2 (1 left, 1 right)
    x = np.random.default_rng(2).standard_normal((2, 8, 7, 1))
    np.testing.assert_allclose(
        run_onnx(tmp_path / "m.onnx", x), keras_forward_numpy(src, x).transpose(0, 3, 1, 2), atol=1e-5
    )


def test_standalone_scale_and_flatten(tmp_path: Path) -> None:
    """A Lambda that cannot fold (its input feeds two layers) and Flatten in Keras' NHWC order."""
    kf = KerasFile(4, 5, 2)
    c = kf.conv("c", "input_1", 2, 3, 3)
    s = kf.scale("s", c, -0.5)
    a = kf.add("Add", "a", [c, s])
    f = kf.add("Flatten", "f", [a])
    out = kf.add("Dense", "d", [f], {"kernel": kf.w(60, 4), "bias": kf.w(4)}, units=4, activation="tanh")
    src = kf.save(tmp_path / "m.h5", out)
    keras_h5.convert(src, tmp_path / "m.onnx")
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 2))
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", x), keras_forward_numpy(src, x), atol=1e-5)
    assert _ops(tmp_path / "m.onnx").count("Mul") == 1


def test_unknown_layer_is_named(tmp_path: Path) -> None:
    kf = KerasFile(8, 8, 1)
    out = kf.add("UpSampling2D", "grow_me", ["input_1"], size=[2, 2])
    src = kf.save(tmp_path / "m.h5", out)
    with pytest.raises(keras_h5.KerasConversionError, match="grow_me.*UpSampling2D"):
        keras_h5.convert(src, tmp_path / "m.onnx")


def test_lambda_must_be_a_scale(tmp_path: Path) -> None:
    kf = KerasFile(8, 8, 1)
    out = kf.add(
        "Lambda", "odd", ["input_1"], function=[_SCALE_FN, None, None], function_type="lambda", arguments={}
    )
    src = kf.save(tmp_path / "m.h5", out)
    with pytest.raises(keras_h5.KerasConversionError, match="odd"):
        keras_h5.convert(src, tmp_path / "m.onnx")


# ---------------------------------------------------------------------------------------------------------
# The real source files, for test_facenet.py and test_emotion.py.


def keras_source(name: str) -> Path:
    """The verified original Keras file of model `name` (registry name: "facenet", "emotion")."""
    folder = os.environ.get("FACEQUEUE_TEST_SOURCES")
    if folder and (Path(folder) / MODELS[name].file).is_file():
        return Path(folder) / MODELS[name].file
    try:
        from workers.models.fetch import fetch_source
    except ImportError:
        pytest.skip("no workers.models.fetch and FACEQUEUE_TEST_SOURCES does not hold the file")
    return fetch_source(name)
