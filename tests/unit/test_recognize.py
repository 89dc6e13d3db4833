"""Recognition parameters and profile wiring against the committed calibration table."""

from __future__ import annotations

import numpy as np
import pytest

from facequeue.settings import Settings
from schema.errors import FacequeueError
from workers.recognition import calibration
from workers.recognize import calibration_key, distances, parse_parameters, profile_models


def test_parameters() -> None:
    params = parse_parameters("min_match_score:0.6, max_results:5, fmr:1e-4", 1e-3)
    assert (params.max_results, params.min_match_score, params.fmr) == (5, 0.6, 1e-4)
    assert parse_parameters(None, 1e-3).fmr == 1e-3
    assert parse_parameters("threshold:0.3", 1e-3).raw_threshold == 0.3
    for bad in ("fmr:0.5", "max_results:0", "max_results:ten"):
        with pytest.raises(FacequeueError):
            parse_parameters(bad, 1e-3)


@pytest.mark.parametrize(
    ("profile", "int8", "models"),
    [
        ("fast", False, ("facenet-keras-2024",)),
        ("fast", True, ("facenet-keras-2024-int8",)),
        ("accurate", False, ("facenet-keras-2024", "dlib-resnet-v1")),
    ],
)
def test_every_profile_is_calibrated(profile: str, int8: bool, models: tuple[str, ...]) -> None:
    settings = Settings(embedding_profile=profile, int8_embeddings=int8)
    assert profile_models(settings) == models
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = {m: vectors[:1] for m in models}
    targets = {m: vectors for m in models}
    dist = distances(queries, targets)
    key = calibration_key(models)
    threshold = calibration.threshold(key, 1e-3)
    confidence = calibration.confidence(key, dist)
    assert dist[0, 0] <= threshold, "a face is a match for itself"
    assert (dist[0, 1:] > threshold).all(), "random directions are strangers"
    assert confidence[0, 0] > 0.9 > confidence[0, 1:].max()
