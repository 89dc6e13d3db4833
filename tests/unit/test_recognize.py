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
    assert parse_parameters("fpir:0.001", 1e-3).fpir == 0.001
    assert parse_parameters(None, 1e-3, 0.05).fpir == 0.05
    for bad in ("fmr:0.5", "max_results:0", "max_results:ten", "fpir:0", "fpir:0.5"):
        with pytest.raises(FacequeueError):
            parse_parameters(bad, 1e-3)


@pytest.mark.parametrize(
    ("profile", "int8", "models"),
    [
        ("fast", False, ("sface-2021dec",)),
        ("fast", True, ("sface-2021dec",)),  # int8 applies to FaceNet only
        ("accurate", False, ("sface-2021dec", "dlib-resnet-v1")),
        ("accurate", True, ("sface-2021dec", "dlib-resnet-v1")),
        ("facenet", False, ("facenet-keras-2024",)),
        ("facenet", True, ("facenet-keras-2024-int8",)),
        ("facenet-dlib", False, ("facenet-keras-2024", "dlib-resnet-v1")),
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
    key = calibration_key(settings)
    dist = distances(queries, targets, key)
    threshold = calibration.threshold(key, 1e-3)
    confidence = calibration.confidence(key, dist)
    assert dist[0, 0] <= threshold, "a face is a match for itself"
    assert (dist[0, 1:] > threshold).all(), "random directions are strangers"
    assert confidence[0, 0] > 0.9 > confidence[0, 1:].max()


def test_identification_threshold_tightens_with_gallery_size() -> None:
    """FPIR ~= N x FMR: a 1 % target at N faces is FMR 1e-2 / N, floored at the table's smallest FMR."""
    key = "sface-2021dec"
    assert calibration.identification_fmr(0.01, 10) == 1e-3  # never looser than the table's loosest
    assert calibration.identification_fmr(0.01, 1000) == pytest.approx(1e-5)
    assert calibration.identification_fmr(0.01, 10**9) == 1e-7
    sizes = [10, 100, 1000, 10_000, 100_000]
    thresholds = [calibration.identification_threshold(key, 0.01, n) for n in sizes]
    assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1]
    assert thresholds[2] == pytest.approx(calibration.threshold(key, 1e-5))
