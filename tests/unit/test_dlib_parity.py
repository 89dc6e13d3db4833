"""The converted dlib face descriptor against dlib itself (dlib-bin), on chips dlib makes from real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from tests.unit.test_dlib_convert import source_file
from workers.models.convert import dlib_dnn
from workers.models.dlib_resnet import DlibResNetEmbedder

dlib = pytest.importorskip("dlib")

pytestmark = [pytest.mark.peers, pytest.mark.models, requires_shared_data]

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PHOTOS = DATA / "misc" / "face_recognition_ageitgey" / "examples" / "knn_examples" / "train"


@pytest.fixture(scope="module")
def chips() -> tuple[np.ndarray, list[str]]:
    """One 150x150 chip per detected face, made exactly as dlib's face recognition example does."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(source_file("shape_predictor_5")))
    out, names = [], []
    for path in sorted(PHOTOS.rglob("*.jp*g")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((640, 640))  # detection on smaller copies keeps the test quick
        arr = np.asarray(img)
        for rect in detector(arr, 1):
            out.append(dlib.get_face_chip(arr, predictor(arr, rect), 150, 0.25))
            names.append(path.parent.name)
    assert len(out) >= 8, f"only {len(out)} faces found in {PHOTOS}"
    return np.stack(out), names


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> DlibResNetEmbedder:
    dst = tmp_path_factory.mktemp("dlib") / "dlib_resnet.onnx"
    dlib_dnn.convert(source_file("dlib_resnet"), dst)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return DlibResNetEmbedder(ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"]))


@pytest.fixture(scope="module")
def facerec():
    return dlib.face_recognition_model_v1(str(source_file("dlib_resnet")))


def test_descriptor_matches_dlib(chips, embedder, facerec) -> None:
    images, _ = chips
    want = np.stack([np.asarray(facerec.compute_face_descriptor(c, 0)) for c in images]).astype(np.float32)
    got = embedder.embed(images)
    diff = float(np.abs(got - want).max())
    print(f"dlib parity: {len(images)} chips, max abs difference {diff:.3g}")
    assert got.shape == (len(images), 128) and got.dtype == np.float32
    assert diff < 1e-4


def test_descriptor_separates_people(chips, embedder) -> None:
    """dlib's own rule on raw descriptors: same person closer than 0.6, different people farther."""
    images, names = chips
    d = embedder.embed(images)
    dist = np.linalg.norm(d[:, None] - d[None], axis=2)
    same = np.array([[a == b for b in names] for a in names])
    off_diag = ~np.eye(len(names), dtype=bool)
    assert (same & off_diag).any()
    assert dist[same & off_diag].max() < DlibResNetEmbedder.same_person_distance
    assert dist[~same].min() > DlibResNetEmbedder.same_person_distance
    unit = embedder.embed_normalized(images)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(unit, d / np.linalg.norm(d, axis=1, keepdims=True), atol=1e-6)
