"""Compute workers/pipeline/quality_calibration.json: blur/exposure/noise levels and the recognition-quality model.

levels: the best face of real photos (../shared/data/misc and the free portraits) is cut out at a face
width of FACE_PX and degraded in controlled steps: a Gaussian-blur ladder (sigma in pixels at that face
width), added Gaussian noise (grey levels), exposure shifts (EV, in linear light) and JPEG quality. The
level boundaries are the median measurement over all faces at a boundary degradation:
  blur   low < sigma 1.0 px <= medium < sigma 2.5 px <= high
  noise  low < sigma 5 grey levels added <= medium < 12 <= high
  exposure under <= -1.5 EV < good < +1.5 EV <= over (from the photo as published)

recognition: every identity-labelled photo (tools/calibrate.py's sets) goes through the pipeline with
`classifiers`; a face's outcome is the fraction of its genuine pairs accepted at FMR 1e-3 (FaceNet
cosine distance, workers/recognition/calibration.json). A binomial logistic model on the face's own
measurements (blur, exposure, noise, |yaw|, |pitch|, log face size, detection score) predicts that
fraction; degradations may not raise it (their coefficients are held <= 0: noise and pose, which on
these sets went with better outcomes, drop out). quality_for_recognition is high when the prediction is
>= 0.5 ("accepted most of the time"), medium from 0.25, low below. CACD-VS is left out of the fit.
Features are cached (--cache); the first run embeds about 3,000 photos (about 10 min on a quiet core).

    python tools/calibrate_quality.py levels|recognition|all [--no-write]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.pipeline import attributes  # noqa: E402
from workers.pipeline.attributes import QUALITY_CALIBRATION_PATH, image_quality  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FACE_PX = 112  # face box width the ladders are defined at
BLUR_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
NOISE_SIGMAS = (0.0, 2.0, 5.0, 8.0, 12.0, 16.0, 24.0)
EV_SHIFTS = (-3.0, -2.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0, 3.0)
JPEG_QUALITIES = (95, 75, 50, 30, 20, 10, 5)
BOUNDARIES = {"blur": (1.0, 2.5), "noise": (5.0, 12.0), "exposure": (-1.5, 1.5)}
HELD_OUT = "cacd_vs"  # data set left out of the fit (checked by the accuracy test)
FEATURES = ("blur", "exposure_offset", "noise", "abs_yaw", "abs_pitch", "log_size", "detection_score")


def level_photos() -> list[np.ndarray]:
    from tests.photos import astronaut, hopper

    folders = [
        DATA / "misc" / "deepface_tests_unit_dataset",
        DATA / "misc" / "CompreFace_sample_images",
        DATA / "misc" / "face_recognition_ageitgey",
        DATA / "misc" / "insightface_samples",
    ]
    photos = [astronaut(), hopper()]
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                photos.append(np.asarray(Image.open(path).convert("RGB")))
    return photos


def face_crops(photos: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(grey crop, box) per photo: the best face, resampled so its box is FACE_PX wide, with context."""
    from facequeue.settings import get_settings
    from workers.pipeline.analyse import get_pipeline

    detector = get_pipeline(get_settings()).detector
    out = []
    for rgb in photos:
        det = detector.detect(rgb, "fast")
        if not len(det) or det.boxes[0, 2] - det.boxes[0, 0] < 80:
            continue  # small faces cannot be resampled up without blurring them first
        x1, y1, x2, y2 = det.boxes[0]
        scale = FACE_PX / (x2 - x1)
        grey = Image.fromarray(rgb).convert("L")
        size = (round(grey.width * scale), round(grey.height * scale))
        out.append((np.asarray(grey.resize(size, Image.LANCZOS)), det.boxes[0] * scale))
    return out


def _ev(grey: np.ndarray, ev: float) -> np.ndarray:
    linear = (grey / 255.0) ** 2.2 * 2.0**ev
    return (np.clip(linear, 0, 1) ** (1 / 2.2) * 255).round().astype(np.uint8)


def _jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def ladders(crops: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """(faces, steps) measurements per ladder: blur, noise, exposure, and blur/noise along JPEG quality."""
    rng = np.random.default_rng(0)
    out: dict[str, list[list[float]]] = defaultdict(list)
    for grey, box in crops:
        pil = Image.fromarray(grey)
        out["blur"].append(
            [image_quality(np.asarray(pil.filter(ImageFilter.GaussianBlur(s))), box)[0] for s in BLUR_SIGMAS]
        )
        noise = rng.normal(0, 1, grey.shape)
        out["noise"].append(
            [
                image_quality(np.clip(grey + s * noise, 0, 255).round().astype(np.uint8), box)[2]
                for s in NOISE_SIGMAS
            ]
        )
        out["exposure"].append([image_quality(_ev(grey, ev), box)[1] for ev in EV_SHIFTS])
        jpeg = [image_quality(_jpeg(grey, q), box) for q in JPEG_QUALITIES]
        out["jpeg_blur"].append([m[0] for m in jpeg])
        out["jpeg_noise"].append([m[2] for m in jpeg])
    return {k: np.array(v) for k, v in out.items()}


def fit_levels(measured: dict[str, np.ndarray]) -> dict:
    steps = {"blur": BLUR_SIGMAS, "noise": NOISE_SIGMAS, "exposure": EV_SHIFTS}
    levels = {}
    for name, (lo, hi) in BOUNDARIES.items():
        medians = np.median(measured[name], axis=0)
        levels[name] = [round(float(np.interp(b, steps[name], medians)), 4) for b in (lo, hi)]
    report = {
        name: {
            "steps": list(steps.get(name, JPEG_QUALITIES)),
            "median": [round(float(v), 4) for v in np.median(values, axis=0)],
            # Share of faces whose measurement never goes down along the ladder (small tolerance).
            "monotone": round(
                float((np.diff(values, axis=1) >= -0.01 * np.abs(values[:, :-1])).all(1).mean()), 3
            ),
        }
        for name, values in measured.items()
    }
    return {
        "levels": levels,
        "boundaries": BOUNDARIES,
        "faces": int(len(measured["blur"])),
        "ladders": report,
    }


# ---------------------------------------------------------------- recognition usefulness


def face_features(cache: Path) -> dict[str, dict]:
    """Per photo: FaceNet embedding and the measured features of the best face (cached)."""
    if cache.exists():
        return json.loads(cache.read_text())
    from calibrate import PAD_BELOW, collect  # tools/calibrate.py

    from facequeue.settings import get_settings
    from workers.pipeline.analyse import get_pipeline
    from workers.pipeline.decode import decode_image

    items, pairs = collect()
    paths = sorted({p for _, _, p in items} | {p for a, b, _ in pairs for p in (a, b)})
    # Genuine-pair outcomes are FaceNet's (the table's `model`): embed with the facenet profile.
    pipeline = get_pipeline(get_settings().model_copy(update={"embedding_profile": "facenet"}))
    out: dict[str, dict] = {}
    start = time.perf_counter()
    for i, path in enumerate(paths):
        if path.suffix == ".pgm":
            rgb = np.asarray(Image.open(path).convert("RGB"))
        else:
            rgb = decode_image(path.read_bytes(), 50_000_000, 50_000_000).rgb
        if max(rgb.shape[:2]) < PAD_BELOW:
            pad = max(rgb.shape[:2]) // 2
            rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        faces = pipeline.analyse(rgb, {"bestface", "classifiers"}, {"detection_mode": "fast"})
        if faces:
            face = faces[0]
            tags = {t.name: t.value for t in face.tags}
            out[str(path)] = {
                "embedding": [round(float(v), 6) for v in face.embeddings["facenet-keras-2024"]],
                "blur": float(tags["blur value"]),
                "exposure": float(tags["exposure value"]),
                "noise": float(tags["noise value"]),
                "yaw": float(tags["yaw"]),
                "pitch": float(tags["pitch"]),
                "size": float(tags["face_size"]),
                "detection_score": face.score,
            }
        if (i + 1) % 500 == 0:
            print(f"  {i + 1}/{len(paths)} photos ({time.perf_counter() - start:.0f} s)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def feature_matrix(rows: list[dict]) -> np.ndarray:
    return np.array(
        [
            [
                r["blur"],
                abs(r["exposure"] - 0.5),
                np.log1p(r["noise"]),
                abs(r["yaw"]),
                abs(r["pitch"] - 10.0),  # frontal portraits read about +10 (attributes.head_pose)
                np.log(max(r["size"], 1.0)),
                r["detection_score"],
            ]
            for r in rows
        ]
    )


def genuine_outcomes(features: dict[str, dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per face: genuine pairs and how many are accepted at FMR 1e-3 (FaceNet)."""
    from calibrate import collect

    from workers.recognition.calibration import threshold

    items, listed = collect()
    cut = threshold("facenet-keras-2024", 1e-3)
    genuine: set[tuple[str, str]] = set()
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for dataset, identity, path in items:
        if str(path) in features:
            groups[(dataset, identity)].append(str(path))
    for members in groups.values():
        genuine |= {(a, b) for i, a in enumerate(members) for b in members[i + 1 :]}
    genuine |= {
        (str(a), str(b)) for a, b, same in listed if same and str(a) in features and str(b) in features
    }
    trials: dict[str, int] = defaultdict(int)
    accepted: dict[str, int] = defaultdict(int)
    for a, b in genuine:
        distance = 1.0 - float(np.dot(features[a]["embedding"], features[b]["embedding"]))
        for key in (a, b):
            trials[key] += 1
            accepted[key] += int(distance <= cut)
    keys = sorted(trials)
    return keys, np.array([trials[k] for k in keys]), np.array([accepted[k] for k in keys])


def fit_binomial(x: np.ndarray, trials: np.ndarray, accepted: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Logistic regression on success counts (Newton steps); x already standardised; returns [w..., b]."""
    xb = np.column_stack([x, np.ones(len(x))])
    w = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ w))
        grad = xb.T @ (accepted - trials * p) - l2 * np.r_[w[:-1], 0]
        hess = (xb * (trials * p * (1 - p))[:, None]).T @ xb + l2 * np.diag(np.r_[np.ones(len(w) - 1), 0])
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    return w


# Degradations may not raise predicted usefulness: their coefficients are kept <= 0 (a feature whose free
# fit comes out positive, e.g. noise that goes with sharper photos in these sets, is left out and refitted).
NON_POSITIVE = ("blur", "exposure_offset", "noise", "abs_yaw", "abs_pitch")


def fit_monotone(z: np.ndarray, trials: np.ndarray, accepted: np.ndarray) -> np.ndarray:
    active = np.ones(len(FEATURES), bool)
    while True:
        w = np.zeros(len(FEATURES) + 1)
        w[np.r_[active, True]] = fit_binomial(z[:, active], trials, accepted)
        wrong = [i for i, name in enumerate(FEATURES) if name in NON_POSITIVE and w[i] > 0]
        if not wrong:
            return w
        active[max(wrong, key=lambda i: w[i])] = False


def fit_recognition(features: dict[str, dict]) -> dict:
    keys, trials, accepted = genuine_outcomes(features)
    x = feature_matrix([features[k] for k in keys])
    # CACD-VS is held out of the fit: tests/accuracy/test_quality.py checks the prediction on it.
    held = np.array([HELD_OUT in k for k in keys])
    mean, scale = x[~held].mean(0), x[~held].std(0) + 1e-9
    z = (x - mean) / scale
    w = fit_monotone(z[~held], trials[~held], accepted[~held])
    predicted = 1 / (1 + np.exp(-(np.column_stack([z, np.ones(len(z))]) @ w)))
    rate = accepted / trials
    by_level: dict[str, dict] = {}
    for part, rows in (("fit", ~held), ("held_out_cacd_vs", held)):
        for name, lo, hi in (("low", 0.0, 0.25), ("medium", 0.25, 0.5), ("high", 0.5, 1.01)):
            sel = rows & (predicted >= lo) & (predicted < hi)
            by_level.setdefault(part, {})[name] = {
                "faces": int(sel.sum()),
                "genuine_accepted": round(float(accepted[sel].sum() / max(trials[sel].sum(), 1)), 3),
            }
    return {
        "model": "facenet-keras-2024",
        "fmr": 1e-3,
        "features": list(FEATURES),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in w[:-1]],
        "intercept": round(float(w[-1]), 6),
        "levels": [0.25, 0.5],
        "faces": int((~held).sum()),
        "genuine_pairs": int(trials[~held].sum() // 2),
        "overall_accepted": round(float(accepted[~held].sum() / trials[~held].sum()), 3),
        "faces_accepted_most_of_the_time": round(float((rate[~held] >= 0.5).mean()), 3),
        "by_predicted_level": by_level,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("levels", "recognition", "all"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facequeue-quality-features.json"))
    args = parser.parse_args()
    table = json.loads(QUALITY_CALIBRATION_PATH.read_text()) if QUALITY_CALIBRATION_PATH.exists() else {}
    if args.part in ("levels", "all"):
        crops = face_crops(level_photos())
        table["image"] = fit_levels(ladders(crops))
        print(json.dumps(table["image"], indent=1))
    if args.part in ("recognition", "all"):
        if "recognition" not in table:
            # First fit: the pipeline's tags need some model to run; a flat one is used for the feature
            # pass only (its output is never kept: the features are the raw measurements).
            flat = {
                "mean": [0.0] * len(FEATURES),
                "scale": [1.0] * len(FEATURES),
                "coef": [0.0] * len(FEATURES),
            }
            attributes.quality_calibration.cache_clear()
            attributes.QUALITY_CALIBRATION_PATH = Path("/tmp/facequeue-quality-bootstrap.json")
            attributes.QUALITY_CALIBRATION_PATH.write_text(
                json.dumps(table | {"recognition": flat | {"intercept": 0.0, "levels": [0.25, 0.5]}})
            )
        table["recognition"] = fit_recognition(face_features(args.cache))
        print(json.dumps(table["recognition"], indent=1))
    if not args.no_write:
        QUALITY_CALIBRATION_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {QUALITY_CALIBRATION_PATH}")


if __name__ == "__main__":
    main()
