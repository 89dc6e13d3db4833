"""dlib DNN → ONNX converter: the file format, dlib's layer semantics, and the real face descriptor file."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workers.models.convert import dlib_dnn
from workers.models.registry import MODELS

# ---------------------------------------------------------------------------------------------------------
# A tiny writer for dlib's serialisation format (dlib/serialize.h), to build small networks by hand.


def _int(v: int) -> bytes:
    neg = 0x80 if v < 0 else 0
    v = abs(v)
    raw = v.to_bytes(max(1, (v.bit_length() + 7) // 8), "little")
    return bytes([len(raw) | neg]) + raw


def _float(v: float) -> bytes:
    frac, exp = math.frexp(v)
    mantissa = int(frac * (1 << 24))
    return _int(mantissa) + _int(exp - 24)


def _str(s: str) -> bytes:
    return _int(len(s)) + s.encode()


def _bool(b: bool) -> bytes:
    return b"1" if b else b"0"


def _tensor(a: np.ndarray | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    if a is None:
        return _int(2) + b"".join(_int(0) for _ in range(4))
    a = np.asarray(a, "<f4")
    shape = shape or (1,) * (4 - a.ndim) + a.shape
    return _int(2) + b"".join(_int(d) for d in shape) + a.tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(_int(d) for d in shape)


def _con(w: np.ndarray, b: np.ndarray, stride: int, pad: int, relu: bool = False) -> bytes:
    n, k, nr, nc = w.shape
    params = np.concatenate([w.ravel(), b])
    out = _str("con_6") + _tensor(params, (len(params), 1, 1, 1))
    out += _int(n) + _int(nr) + _int(nc) + _int(stride) + _int(stride) + _int(pad) + _int(pad)
    out += _alias(n, k, nr, nc) + _alias(1, n, 1, 1)
    out += _float(1) + _float(1) + _float(1) + _float(0)
    return out + _bool(True) + _bool(relu)


def _affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    k = len(gamma)
    params = np.concatenate([gamma, beta])
    out = _str("affine_2") + _tensor(params, (1, 2 * k, 1, 1)) + _alias(1, k, 1, 1) + _alias(1, k, 1, 1)
    return out + _int(0) + _bool(False)


def _pool(kind: str, size: int, stride: int) -> bytes:
    return _str(f"{kind}_2") + _int(size) + _int(size) + _int(stride) + _int(stride) + _int(0) + _int(0)


def _fc(w: np.ndarray, b: np.ndarray) -> bytes:
    n_in, n_out = w.shape
    params = np.concatenate([w.ravel(), b])
    out = _str("fc_3") + _int(n_out) + _int(n_in) + _tensor(params, (n_in + 1, n_out, 1, 1))
    out += _alias(n_in, n_out, 1, 1) + _alias(1, n_out, 1, 1) + _int(0)
    return out + _float(1) + _float(1) + _float(1) + _float(0) + _bool(True)


_STATE = _bool(True) + _bool(False) + _bool(False) + _tensor() + _tensor() + _tensor()
_MEAN = (122.782, 117.001, 104.298)
_SIZE = 8


def _tiny_net(rng: np.random.Generator, extra_layer: bytes = b"") -> tuple[bytes, dict[str, np.ndarray]]:
    """input 3x8x8 → con0 (fused relu) → tag1 → con1 s2 → affine → relu → con2 → affine → tag2 → skip1 →
    avg_pool 2x2 s2 → add_prev2 → relu → avg_pool_everything → fc. The add meets 6x3x3 and 4x4x4 tensors."""
    p = {
        "w0": rng.normal(0, 0.5, (4, 3, 3, 3)),
        "b0": rng.normal(0, 0.1, 4),
        "w1": rng.normal(0, 0.5, (6, 4, 3, 3)),
        "b1": rng.normal(0, 0.1, 6),
        "g1": rng.uniform(0.5, 1.5, 6),
        "h1": rng.normal(0, 0.1, 6),
        "w2": rng.normal(0, 0.3, (6, 6, 3, 3)),
        "b2": rng.normal(0, 0.1, 6),
        "g2": rng.uniform(0.5, 1.5, 6),
        "h2": rng.normal(0, 0.1, 6),
        "fw": rng.normal(0, 1, (6, 5)),
        "fb": rng.normal(0, 0.1, 5),
    }
    p = {k: v.astype(np.float32) for k, v in p.items()}
    # Outside-in versions: fc, avg_pool_everything, relu, add_prev, avg_pool (v2); skip, tag (v1);
    # affine, con, relu, affine, con (v2); tag (v1); then con0 + input (v3).
    versions = [2, 2, 2, 2, 2, 1, 1, 2, 2, 2, 2, 2, 1, 3]
    if extra_layer:
        versions.insert(0, 2)
    data = _int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6)
    data += b"".join(_int(v) for v in versions)
    data += _str("input_rgb_image_sized") + b"".join(_float(m) for m in _MEAN) + _int(_SIZE) + _int(_SIZE)
    data += _con(p["w0"], p["b0"], 1, 1, relu=True) + _STATE + _int(1)  # v3 adds a sample factor
    data += _con(p["w1"], p["b1"], 2, 0) + _STATE
    data += _affine(p["g1"], p["h1"]) + _STATE
    data += _str("relu_2") + _bool(False) + _STATE
    data += _con(p["w2"], p["b2"], 1, 1) + _STATE
    data += _affine(p["g2"], p["h2"]) + _STATE
    data += _pool("avg_pool", 2, 2) + _STATE
    data += _str("add_prev_") + _STATE
    data += _str("relu_2") + _bool(False) + _STATE
    data += _pool("avg_pool", 0, 1) + _STATE
    data += _fc(p["fw"], p["fb"]) + _STATE
    if extra_layer:
        data += extra_layer + _STATE
    return data, p


# dlib's semantics, written out plainly in numpy (one sample, CHW, float64).


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("khwij,okij->ohw", win, w) + b[:, None, None]


def _add_zero_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros([max(s, t) for s, t in zip(a.shape, b.shape, strict=True)])
    out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
    return out


def _reference(img: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    x = (img.transpose(2, 0, 1).astype(np.float64) - np.array(_MEAN)[:, None, None]) / 256
    a = np.maximum(_conv(x, p["w0"], p["b0"], 1, 1), 0)
    y = _conv(a, p["w1"], p["b1"], 2, 0) * p["g1"][:, None, None] + p["h1"][:, None, None]
    y = _conv(np.maximum(y, 0), p["w2"], p["b2"], 1, 1) * p["g2"][:, None, None] + p["h2"][:, None, None]
    pooled = a.reshape(a.shape[0], 4, 2, 4, 2).mean(axis=(2, 4))
    z = np.maximum(_add_zero_padded(y, pooled), 0).mean(axis=(1, 2))
    return z @ p["fw"] + p["fb"]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_tiny_network_matches_dlib_semantics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data, p = _tiny_net(rng)
    net = dlib_dnn.parse(data)
    kinds = [layer.kind for layer in net.layers]
    assert kinds == [
        "con", "marker", "con", "affine", "relu", "con", "affine", "marker", "marker",
        "avg_pool", "add_prev", "relu", "avg_pool", "fc",
    ]  # fmt: skip
    assert net.mean_rgb == pytest.approx(_MEAN, abs=1e-5)
    assert net.input_size == (_SIZE, _SIZE)

    (tmp_path / "tiny.dat").write_bytes(data)
    dlib_dnn.convert(tmp_path / "tiny.dat", tmp_path / "tiny.onnx")
    imgs = rng.integers(0, 256, (3, _SIZE, _SIZE, 3), dtype=np.uint8)
    got = _run(tmp_path / "tiny.onnx", imgs.transpose(0, 3, 1, 2).astype(np.float32))
    want = np.stack([_reference(img, p) for img in imgs])
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unsupported_layer_is_named(tmp_path: Path) -> None:
    data, _ = _tiny_net(np.random.default_rng(1), extra_layer=_str("prelu_") + _float(0.25))
    with pytest.raises(dlib_dnn.DlibFormatError, match="unsupported dlib layer 'prelu_'"):
        dlib_dnn.parse(data)


def test_truncated_file_fails_clearly() -> None:
    data, _ = _tiny_net(np.random.default_rng(2))
    with pytest.raises(dlib_dnn.DlibFormatError, match="end of file"):
        dlib_dnn.parse(data[: len(data) // 2])
    with pytest.raises(dlib_dnn.DlibFormatError, match="trailing bytes"):
        dlib_dnn.parse(data + b"\x01\x02")


# ---------------------------------------------------------------------------------------------------------
# The real file.


def source_file(name: str) -> Path:
    """The verified original file of a model in the registry."""
    try:
        from workers.models.fetch import fetch_source
    except ImportError:  # the fetcher is not there yet: a folder with the raw files instead
        folder = os.environ.get("FACEQUEUE_TEST_SOURCES")
        if not folder:
            pytest.skip("no workers.models.fetch and FACEQUEUE_TEST_SOURCES is not set")
        return Path(folder) / MODELS[name].file
    return fetch_source(name)


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("dlib") / "dlib_resnet.onnx"
    dlib_dnn.convert(source_file("dlib_resnet"), dst)
    return dst


@pytest.mark.models
def test_face_descriptor_network_structure(resnet_onnx: Path) -> None:
    net = dlib_dnn.parse(source_file("dlib_resnet").read_bytes())
    kinds = [layer.kind for layer in net.layers]
    assert net.loss == "loss_metric_2"
    assert net.input_size == (150, 150)
    assert net.mean_rgb == pytest.approx(_MEAN, abs=1e-4)
    # 1 stem conv + 2 per residual block (3+4+3+3+1 = 14 blocks); 4 downsampling blocks.
    assert kinds.count("con") == 29
    assert kinds.count("add_prev") == 14
    assert kinds.count("avg_pool") == 5
    assert kinds[-2:] == ["avg_pool", "fc"]

    model = onnx.load(str(resnet_onnx))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 29
    # Every affine follows a conv directly, so all are folded away.
    assert "BatchNormalization" not in ops and ops.count("Mul") == 1
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param == "N" and out[1].dim_value == 128


@pytest.mark.models
def test_dynamic_batch_gives_the_same_rows(resnet_onnx: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (3, 3, 150, 150)).astype(np.float32)
    batch = _run(resnet_onnx, x)
    single = np.concatenate([_run(resnet_onnx, x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, 128)
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_not_a_network_fails_clearly() -> None:
    # A dlib shape predictor file starts like any dlib object: an int version, then other fields.
    with pytest.raises(dlib_dnn.DlibFormatError, match="not a dlib DNN file"):
        dlib_dnn.parse(_int(1) + _int(7) + b"\x00\x00")
