"""The committed calibration table: monotone confidence, ordered thresholds, sensible decisions."""

from __future__ import annotations

import numpy as np
import pytest

from workers.recognition.calibration import (
    TABLE_FMRS,
    confidence,
    fit_logistic,
    fit_thresholds,
    fused_distance,
    is_match,
    load_table,
    threshold,
)

KEYS = ("sface-2021dec", "facenet-keras-2024", "dlib-resnet-v1", "accurate", "facenet-dlib")
FUSED = ("accurate", "facenet-dlib")


@pytest.mark.parametrize("key", KEYS)
def test_confidence_monotone_in_unit_interval(key: str) -> None:
    d = np.linspace(-10, 2, 2001) if key in FUSED else np.linspace(0, 2, 2001)
    c = confidence(key, d)
    assert ((c >= 0) & (c <= 1)).all()
    assert np.all(np.diff(c) <= 0) and c[0] > 0.99 and c[-1] < 0.01


@pytest.mark.parametrize("key", KEYS)
def test_thresholds_ordered_by_fmr(key: str) -> None:
    values = [threshold(key, f) for f in TABLE_FMRS]  # 1e-3 ... 1e-7: stricter = smaller distance
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[1] < threshold(key, 3e-4) < values[0]
    with pytest.raises(ValueError):
        threshold(key, 0.5)


@pytest.mark.parametrize("key", KEYS)
def test_genuine_and_impostor_like_distances(key: str) -> None:
    entry = load_table()["models"][key]
    # A distance at the FMR 1e-3 threshold is far into the impostor tail: P(same) well above one half.
    assert confidence(key, np.array([threshold(key, 1e-3)]))[0] > 0.5
    # the mean impostor distance (z-score 0 for the fused score) is a typical stranger
    impostor_like = 0.0 if key in FUSED else entry["impostor_mean"]
    assert confidence(key, np.array([impostor_like]))[0] < 0.5
    assert not is_match(key, np.array([impostor_like]))[0]
    assert entry["genuine_pairs"] >= 1000 and entry["impostor_pairs"] >= 100_000


@pytest.mark.parametrize("key", FUSED)
def test_fused_distance_of_typical_pairs(key: str) -> None:
    table = load_table()["models"]
    models = load_table()["fused"][key]["models"]
    assert len(models) == 2
    strangers = {m: np.array([table[m]["impostor_mean"]]) for m in models}
    assert abs(fused_distance(key, strangers)[0]) < 1e-9
    # Both models far inside their own FMR 1e-5 thresholds: the fused score agrees.
    close = {m: np.array([0.5 * threshold(m, 1e-5)]) for m in strangers}
    assert fused_distance(key, close)[0] < threshold(key, 1e-5)
    with pytest.raises(KeyError):
        fused_distance(key, {models[0]: np.array([0.1])})
    with pytest.raises(KeyError):
        fused_distance("sface-2021dec", strangers)


def test_fits_on_synthetic_distances() -> None:
    rng = np.random.default_rng(0)
    genuine = rng.normal(0.3, 0.1, 5000)
    impostor = rng.normal(0.9, 0.1, 200_000)
    fit = fit_logistic(genuine, impostor)
    assert fit["b"] < 0 and abs(-fit["a"] / fit["b"] - 0.6) < 0.02  # equal-density point of the two normals
    thresholds = fit_thresholds(impostor)
    # normal impostors: FMR 1e-3 at 0.9 - 3.09 sd, 1e-5 (tail fit) at 0.9 - 4.26 sd
    assert abs(thresholds["0.001"]["threshold"] - (0.9 - 0.309)) < 0.01
    assert not thresholds["0.001"]["extrapolated"] and thresholds["1e-05"]["extrapolated"]
    assert set(thresholds) == {f"{f:g}" for f in TABLE_FMRS}
    assert abs(thresholds["1e-05"]["threshold"] - (0.9 - 0.426)) < 0.02


@pytest.mark.parametrize("key", KEYS)
def test_a_face_is_surely_itself(key: str) -> None:
    from workers.recognition.calibration import identical_distance

    assert confidence(key, np.array([identical_distance(key)]))[0] > 0.99
    assert identical_distance(key) < threshold(key, 1e-5)
