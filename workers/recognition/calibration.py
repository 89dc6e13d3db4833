"""Distance -> confidence and FMR thresholds per embedding model, from a committed table.

Distances are cosine distances, 1 - a.b of L2-normalised embeddings (0 = identical, 2 = opposite).
Table keys are embedding model ids ("sface-2021dec", "facenet-keras-2024", "dlib-resnet-v1") and the
names of fused profiles ("accurate", "facenet-dlib"; see workers/recognition/profiles.py), whose distance
is the weighted mean of the per-model z-scores (`fused_distance`; weights fitted by tools/calibrate.py). The table (calibration.json) is written by
tools/calibrate.py from identity-labelled photos run through our own pipeline.

Confidence is a logistic fit of P(same | distance) with genuine and impostor pairs weighted equally,
i.e. the posterior at even prior odds: 0.5 where a distance is as likely for a genuine pair as for an
impostor one. It is a smooth, monotone probability that callers can read as "how sure"; the
decision itself uses `threshold(key, fmr)`, which is set on the impostor distribution alone, so a
match at FMR 1e-3 means at most about 1 in 1000 different-person pairs pass.

Identification (1:N, a probe against a gallery of N enrolled faces): the probe raises a false alarm when
any of the N impostor comparisons passes, so FPIR ~= N x FMR. `identification_threshold` keeps a
false-positive identification rate target by using FMR = FPIR / N, down to the smallest FMR in the
table (1e-7, a tail fit); larger galleries than FPIR / 1e-7 get that floor and a higher FPIR.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

TABLE_PATH = Path(__file__).with_name("calibration.json")
FMRS = (1e-3, 1e-4, 1e-5)  # the verification choices offered to callers
# Also fitted (tail fit, beyond what the pairs resolve): what identification in large galleries needs.
TABLE_FMRS = (*FMRS, 1e-6, 1e-7)
# An empirical quantile needs this many impostor pairs below it to be trusted; otherwise use the tail fit.
MIN_TAIL_COUNT = 10


@lru_cache
def load_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    return json.loads(path.read_text())


def _entry(model_key: str) -> dict[str, Any]:
    models = load_table()["models"]
    if model_key not in models:
        raise KeyError(f"no calibration for {model_key!r}; known: {sorted(models)}")
    return models[model_key]


def confidence(model_key: str, distance: np.ndarray) -> np.ndarray:
    """P(same person | distance) at even prior odds, in [0, 1], decreasing in distance."""
    fit = _entry(model_key)["logistic"]
    z = fit["a"] + fit["b"] * np.asarray(distance, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def threshold(model_key: str, fmr: float = 1e-3) -> float:
    """Largest distance still called a match at this false match rate (log-interpolated between table FMRs)."""
    table = _entry(model_key)["thresholds"]
    fmrs = sorted((float(f), v["threshold"]) for f, v in table.items())
    logs = [math.log10(f) for f, _ in fmrs]
    values = [t for _, t in fmrs]
    if not logs[0] <= math.log10(fmr) <= logs[-1]:
        raise ValueError(f"fmr {fmr} outside the calibrated range {fmrs[0][0]}..{fmrs[-1][0]}")
    return float(np.interp(math.log10(fmr), logs, values))


def is_match(model_key: str, distance: np.ndarray, fmr: float = 1e-3) -> np.ndarray:
    return np.asarray(distance) <= threshold(model_key, fmr)


def identification_fmr(fpir: float, gallery_size: int) -> float:
    """Per-comparison FMR that keeps about `fpir` false alarms per probe against `gallery_size` faces."""
    floor = min(TABLE_FMRS)
    return float(min(max(fpir / max(gallery_size, 1), floor), max(TABLE_FMRS)))


def identification_threshold(model_key: str, fpir: float, gallery_size: int) -> float:
    """Distance threshold for 1:N identification at a false-positive identification rate (see above)."""
    return threshold(model_key, identification_fmr(fpir, gallery_size))


def fused_distance_from_stats(
    distances: dict[str, np.ndarray],
    stats: dict[str, dict[str, float]],
    weights: dict[str, float] | None = None,
) -> np.ndarray:
    """Weighted mean over models of (d - impostor mean) / impostor std (equal weights by default):
    negative = closer than a typical stranger."""
    weights = weights or {m: 1.0 for m in distances}
    total = sum(weights[m] for m in distances)
    return sum(
        weights[m]
        / total
        * (np.asarray(d, dtype=np.float64) - stats[m]["impostor_mean"])
        / stats[m]["impostor_std"]
        for m, d in distances.items()
    )


def fused_distance(key: str, distances: dict[str, np.ndarray]) -> np.ndarray:
    """Fused distance of profile `key` from per-model cosine distances (all its models are required)."""
    fused = load_table()["fused"]
    if key not in fused:
        raise KeyError(f"{key!r} is not a fused profile; known: {sorted(fused)}")
    models = fused[key]["models"]
    missing = set(models) - set(distances)
    if missing:
        raise KeyError(f"fused distance needs {sorted(missing)}")
    stats = {m: load_table()["models"][m] for m in models}
    return fused_distance_from_stats({m: distances[m] for m in models}, stats, fused[key].get("weights"))


def identical_distance(key: str) -> float:
    """A face's distance to itself: 0 for one model; for a fused profile, the fused score of zero distances
    (far below 0, which is a typical stranger's)."""
    fused = load_table()["fused"]
    if key not in fused:
        return 0.0
    return float(fused_distance(key, {m: np.zeros(1) for m in fused[key]["models"]})[0])


# --- fitting, used by tools/calibrate.py -----------------------------------------------------------


def fit_logistic(genuine: np.ndarray, impostor: np.ndarray, iterations: int = 50) -> dict[str, float]:
    """Class-balanced logistic regression of same ~ distance (Newton steps on 2 parameters)."""
    x = np.concatenate([genuine, impostor]).astype(np.float64)
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    w = np.concatenate(
        [np.full(len(genuine), 0.5 / len(genuine)), np.full(len(impostor), 0.5 / len(impostor))]
    )
    mean, std = x.mean(), x.std()
    design = np.stack([np.ones_like(x), (x - mean) / std], axis=1)
    beta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ beta))
        gradient = design.T @ (w * (y - p))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    b = beta[1] / std
    a = beta[0] - b * mean
    if b >= 0:
        raise ValueError("confidence would not decrease with distance; the pairs do not separate")
    return {"a": float(a), "b": float(b)}


def fit_thresholds(impostor: np.ndarray) -> dict[str, dict[str, Any]]:
    """Distance thresholds at FMRS from impostor distances.

    Where fewer than MIN_TAIL_COUNT impostor pairs would fall below the threshold, the empirical
    quantile is noise: fit a normal to the lower tail instead (a straight line of distance against the
    normal quantile, over log-spaced tail probabilities 10/n .. 1e-2) and extrapolate, taking the smaller of
    that and the empirical value so the threshold errs towards fewer false matches.
    """
    d = np.asarray(impostor, dtype=np.float64)
    n = len(d)
    # Quantile-quantile line over a log-spaced grid of tail probabilities, so each decade weighs the same.
    grid = np.geomspace(MIN_TAIL_COUNT / n, 1e-2, 25) if MIN_TAIL_COUNT / n < 1e-2 else np.empty(0)
    if len(grid):
        probit = np.array([NormalDist().inv_cdf(p) for p in grid])
        slope, intercept = np.polyfit(probit, np.quantile(d, grid), 1)
    else:
        slope, intercept = np.nan, np.nan
    out: dict[str, dict[str, Any]] = {}
    for fmr in TABLE_FMRS:
        empirical = float(np.quantile(d, fmr))
        if fmr * n >= MIN_TAIL_COUNT:
            out[f"{fmr:g}"] = {"threshold": empirical, "extrapolated": False}
        else:
            fitted = float(intercept + slope * NormalDist().inv_cdf(fmr))
            value = min(fitted, empirical) if np.isfinite(fitted) else float(d.min())
            out[f"{fmr:g}"] = {
                "threshold": value,
                "extrapolated": True,
                "empirical": empirical,
                "tail_fit": fitted,
            }
    return out
