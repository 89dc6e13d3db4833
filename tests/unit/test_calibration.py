"""The committed calibration table: monotone confidence, ordered thresholds, sensible decisions."""

from __future__ import annotations

import numpy as np
import pytest

from workers.recognition.calibration import (
    FMRS,
    confidence,
    fit_logistic,
    fit_thresholds,
    fused_distance,
    is_match,
    load_table,
    threshold,
)

KEYS = ("facenet-keras-2024", "dlib-resnet-v1", "accurate")


@pytest.mark.parametrize("key", KEYS)
def test_confidence_monotone_in_unit_interval(key: str) -> None:
    d = np.linspace(-10, 2, 2001) if key == "accurate" else np.linspace(0, 2, 2001)
    c = confidence(key, d)
    assert ((c >= 0) & (c <= 1)).all()
    assert np.all(np.diff(c) <= 0) and c[0] > 0.99 and c[-1] < 0.01


@pytest.mark.parametrize("key", KEYS)
def test_thresholds_ordered_by_fmr(key: str) -> None:
    values = [threshold(key, f) for f in FMRS]  # 1e-3, 1e-4, 1e-5: stricter = smaller distance
    assert values[0] > values[1] > values[2]
    assert values[1] < threshold(key, 3e-4) < values[0]
    with pytest.raises(ValueError):
        threshold(key, 0.5)


@pytest.mark.parametrize("key", KEYS)
def test_genuine_and_impostor_like_distances(key: str) -> None:
    entry = load_table()["models"][key]
    # A distance at the FMR 1e-3 threshold is far into the impostor tail: P(same) well above one half.
    assert confidence(key, np.array([threshold(key, 1e-3)]))[0] > 0.5
    # the mean impostor distance (z-score 0 for the fused score) is a typical stranger
    impostor_like = 0.0 if key == "accurate" else entry["impostor_mean"]
    assert confidence(key, np.array([impostor_like]))[0] < 0.5
    assert not is_match(key, np.array([impostor_like]))[0]
    assert entry["genuine_pairs"] >= 1000 and entry["impostor_pairs"] >= 100_000


def test_fused_distance_of_typical_pairs() -> None:
    table = load_table()["models"]
    strangers = {m: np.array([table[m]["impostor_mean"]]) for m in ("facenet-keras-2024", "dlib-resnet-v1")}
    assert abs(fused_distance(strangers)[0]) < 1e-9
    # Both models far inside their own FMR 1e-5 thresholds: the fused score agrees.
    close = {m: np.array([0.5 * threshold(m, 1e-5)]) for m in strangers}
    assert fused_distance(close)[0] < threshold("accurate", 1e-5)
    with pytest.raises(KeyError):
        fused_distance({"facenet-keras-2024": np.array([0.1])})


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
    assert abs(thresholds["1e-05"]["threshold"] - (0.9 - 0.426)) < 0.02
