"""FaceNet (facenet_keras_2024.h5) converted to ONNX, against Keras' own outputs on real aligned crops.

tests/fixtures/facenet/reference.npz holds eight 160x160 RGB chips (ArcFace-aligned Glint crops from
../shared/data, two each of four people) and the raw Keras outputs for them, made by
tools/make_keras_reference.py with TensorFlow in a separate venv.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from tests.unit.test_keras_convert import keras_source
from workers.models.convert import keras_h5
from workers.models.facenet import (
    ARCFACE_TEMPLATE_112,
    FaceNetEmbedder,
    l2_normalize,
    prewhiten,
    quantize_int8,
)

pytestmark = pytest.mark.models

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "facenet" / "reference.npz"
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def facenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("facenet") / "facenet.onnx"
    keras_h5.convert(keras_source("facenet"), dst)
    return dst


@pytest.fixture(scope="module")
def embedder(facenet_onnx: Path) -> FaceNetEmbedder:
    return FaceNetEmbedder(_session(facenet_onnx))


def _people(sources: np.ndarray) -> np.ndarray:
    names = [Path(str(s)).parent.name for s in sources]
    return np.array([[a == b for b in names] for a in names])


def test_graph_is_nchw_dynamic_batch_and_folded(facenet_onnx: Path) -> None:
    model = onnx.load(str(facenet_onnx))
    (inp,), (out,) = model.graph.input, model.graph.output
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 160, 160]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [128]
    with h5py.File(keras_source("facenet"), "r") as f:
        kinds = [layer["class_name"] for layer in json.loads(f.attrs["model_config"])["config"]["layers"]]
    ops = [node.op_type for node in model.graph.node]
    # Every BatchNormalization and residual scale folded into its conv / dense; no layout transposes.
    assert ops.count("Conv") == kinds.count("Conv2D") and ops.count("Gemm") == 1
    assert not {"Mul", "BatchNormalization", "Transpose"} & set(ops)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == "92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3"


def test_matches_keras(embedder: FaceNetEmbedder, reference: dict[str, np.ndarray]) -> None:
    raw = embedder.embed_raw(reference["chips"])
    want = reference["raw"]
    raw_diff = float(np.abs(raw - want).max())
    unit_diff = float(np.abs(embedder.embed(reference["chips"]) - l2_normalize(want)).max())
    print(
        f"facenet parity vs Keras ({reference['versions']}), {len(want)} chips: raw max abs {raw_diff:.3g} "
        f"(norms ~{np.linalg.norm(want, axis=1).mean():.1f}), L2-normalised max abs {unit_diff:.3g}"
    )
    assert unit_diff < 1e-4
    assert raw_diff < 1e-3


def test_same_person_is_closer(embedder: FaceNetEmbedder, reference: dict[str, np.ndarray]) -> None:
    e = embedder.embed(reference["chips"])
    cos = e @ e.T
    same = _people(reference["sources"])
    off_diag = ~np.eye(len(e), dtype=bool)
    assert cos[same & off_diag].min() > cos[~same].max()


def test_embed_contract(embedder: FaceNetEmbedder, reference: dict[str, np.ndarray]) -> None:
    chips = reference["chips"]
    e = embedder.embed(chips)
    assert e.shape == (len(chips), 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    # A chip's embedding does not depend on the rest of its batch (prewhitening is per image).
    np.testing.assert_allclose(embedder.embed(chips[3:4]), e[3:4], atol=1e-5)
    assert embedder.embed(chips[:0]).shape == (0, 128)
    assert embedder.model_id == "facenet-keras-2024" and embedder.chip_size == 160
    with pytest.raises(ValueError):
        embedder.embed(chips.astype(np.float32))


def test_prewhiten_and_template() -> None:
    flat = np.full((1, 160, 160, 3), 7, np.uint8)
    assert np.all(prewhiten(flat) == 0)  # the std floor avoids 0/0
    x = prewhiten(np.random.default_rng(0).integers(0, 256, (2, 160, 160, 3), dtype=np.uint8))
    np.testing.assert_allclose(x.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(2, -1).std(1), 1, atol=1e-5)
    t = FaceNetEmbedder.template
    np.testing.assert_allclose(t, ARCFACE_TEMPLATE_112 * 160 / 112, rtol=1e-6)
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # image-left eye / mouth corner first
    assert t[:2, 1].max() < t[2, 1] < t[3:, 1].min()  # eyes above nose above mouth


def _glint_chips(per_person: int, skip: set[str]) -> np.ndarray:
    chips = []
    for folder in sorted((DATA / "identity" / "glint_celeb").iterdir()):
        if folder.name in skip:
            continue
        for path in sorted(folder.glob("*.png"))[:per_person]:
            chips.append(np.asarray(Image.open(path).convert("RGB").resize((160, 160), Image.BILINEAR)))
    assert chips, f"no Glint crops under {DATA}"
    return np.stack(chips)


@requires_shared_data
def test_int8_stays_close_to_fp32(
    facenet_onnx: Path, embedder: FaceNetEmbedder, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # Calibrate on people that are not in the fixture, then compare on the fixture chips.
    people = {Path(str(s)).parent.name for s in reference["sources"]}
    calibration = _glint_chips(1, people)
    dst = tmp_path / "facenet-int8.onnx"
    quantize_int8(facenet_onnx, dst, calibration)
    int8 = FaceNetEmbedder(_session(dst))
    assert int8.model_id == "facenet-keras-2024-int8"
    chips = reference["chips"]
    e8, e32 = int8.embed(chips), embedder.embed(chips)
    cos = (e8 * e32).sum(axis=1)
    print(f"facenet int8 vs fp32 on {len(chips)} chips: cosine min {cos.min():.4f} mean {cos.mean():.4f}")
    assert cos.min() > 0.99
    same = _people(reference["sources"])
    sims = e8 @ e8.T
    assert sims[same & ~np.eye(len(chips), dtype=bool)].min() > sims[~same].max()
