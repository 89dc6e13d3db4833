"""Compute workers/pipeline/quality_calibration.json: blur/exposure/noise levels and the recognition-quality model.

levels: the best face of real photos (../shared/data/misc and the free portraits) is cut out at a face
width of FACE_PX and degraded in controlled steps: a Gaussian-blur ladder (sigma in pixels at that face
width), added Gaussian noise (grey levels), exposure shifts (EV, in linear light) and JPEG quality. The
level boundaries are the median measurement over all faces at a boundary degradation:
  blur   low < sigma 1.0 px <= medium < sigma 2.5 px <= high
  noise  low < sigma 5 grey levels added <= medium < 12 <= high
  exposure under <= -1.5 EV < good < +1.5 EV <= over (from the photo as published)

recognition: every identity-labelled photo (tools/calibrate.py's sets) goes through the pipeline with
`classifiers`; a face's outcome is the fraction of its genuine pairs accepted at FMR 1e-3 by an embedding
profile (--profile, default the service's default profile; its distance and FMR 1e-3 threshold from
workers/recognition/calibration.json). Each identity-labelled photo also gets one degraded copy (`degrade`:
blur, noise, exposure or a smaller face, at a random strength), scored by its pairs with the person's other
photos, so the fit sees what a degradation does to acceptance. A binomial logistic model on the face's own
measurements (blur, exposure, noise, |yaw|, |pitch|, log face size, detection score) predicts that
fraction; degradations may not raise it (their coefficients are held <= 0: one whose free fit comes out
positive drops out, as pose did). quality_for_recognition is high when the prediction is
>= 0.5 ("accepted most of the time"), medium from 0.25, low below. Left out of the fit and reported
apart: CACD-VS, and one identity in four of the other sets (by a hash of the identity).
Features are cached per profile (--cache); the first run embeds about 3,000 photos and 1,500 copies
(about 12 min on a quiet core). The report also scores the model the table held before
(`previous_model_on_this_fit`) on the same faces and outcomes, so a refit shows what it changed.

    python tools/calibrate_quality.py levels|recognition|all [--profile fast] [--no-write]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facequeue.settings import get_settings  # noqa: E402
from workers.pipeline import attributes  # noqa: E402
from workers.pipeline.attributes import QUALITY_CALIBRATION_PATH, image_quality  # noqa: E402
from workers.recognition.calibration import fused_distance, threshold  # noqa: E402
from workers.recognition.profiles import PROFILES, calibration_key, profile_models  # noqa: E402

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


def _load(path: Path) -> np.ndarray:
    from workers.pipeline.decode import decode_image

    if path.suffix == ".pgm":  # ORL greyscale; the service does not accept PGM uploads
        return np.asarray(Image.open(path).convert("RGB"))
    return decode_image(path.read_bytes(), 50_000_000, 50_000_000).rgb


def _measure(pipeline, rgb: np.ndarray, profile: str) -> dict | None:  # noqa: ANN001 - a Pipeline
    """The profile's embeddings and the measured features of the best face, or None without a face."""
    from calibrate import PAD_BELOW  # tools/calibrate.py

    if max(rgb.shape[:2]) < PAD_BELOW:  # tight crops get context, as tools/calibrate.py gives them
        pad = max(rgb.shape[:2]) // 2
        rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    faces = pipeline.analyse(rgb, {"bestface", "classifiers"}, {"detection_mode": "fast"})
    if not faces:
        return None
    tags = {t.name: t.value for t in faces[0].tags}
    return {
        "embeddings": {
            model: [round(float(v), 6) for v in faces[0].embeddings[model]]
            for model in profile_models(profile)
        },
        "blur": float(tags["blur value"]),
        "exposure": float(tags["exposure value"]),
        "noise": float(tags["noise value"]),
        "yaw": float(tags["yaw"]),
        "pitch": float(tags["pitch"]),
        "size": float(tags["face_size"]),
        "detection_score": faces[0].score,
    }


def degrade(rgb: np.ndarray, face_px: float, seed: int) -> np.ndarray:
    """One random degradation of a random strength: blur, added noise, an exposure shift or a smaller face.

    The photo sets vary little in blur, noise and exposure, and face size goes with how hard a set is (LAG's
    small crops span decades of age): fitted on them alone, the model learns the set, not the degradation.
    """
    rng = np.random.default_rng(seed)
    kind = ("blur", "noise", "exposure", "small")[seed % 4]
    if kind == "small" and face_px > 30:
        factor = rng.uniform(20, min(60, face_px)) / face_px
        size = (max(round(rgb.shape[1] * factor), 1), max(round(rgb.shape[0] * factor), 1))
        return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))
    if kind == "noise":
        return np.clip(rgb + rng.normal(0, rng.uniform(4, 30), rgb.shape), 0, 255).astype(np.uint8)
    if kind == "exposure":
        ev = rng.uniform(-3.5, -1.0) if rng.random() < 0.6 else rng.uniform(1.0, 2.5)
        return (np.clip((rgb / 255.0) ** 2.2 * 2.0**ev, 0, 1) ** (1 / 2.2) * 255).round().astype(np.uint8)
    sigma = rng.uniform(0.5, 4.0) * face_px / FACE_PX  # blur, sigma in px at a FACE_PX-wide face
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(sigma)))


DEGRADED = "#degraded"  # key suffix of a photo's degraded copy


def face_features(cache: Path, profile: str) -> dict[str, dict]:
    """Per photo, and per degraded copy of each identity-labelled photo (key + DEGRADED): the profile's
    embeddings and the measured features of the best face (cached)."""
    from calibrate import collect  # tools/calibrate.py

    from workers.pipeline.analyse import get_pipeline

    out: dict[str, dict | None] = json.loads(cache.read_text()) if cache.exists() else {}  # None: no face
    items, pairs = collect()
    paths = sorted({p for _, _, p in items} | {p for a, b, _ in pairs for p in (a, b)})
    labelled = sorted({p for _, _, p in items})
    pipeline = get_pipeline(get_settings().model_copy(update={"embedding_profile": profile}))
    todo = len(out)
    start = time.perf_counter()
    for i, path in enumerate(paths + labelled):
        key = str(path) if i < len(paths) else str(path) + DEGRADED
        original = out.get(str(path))
        if key in out or (key.endswith(DEGRADED) and original is None):
            continue
        rgb = _load(path)
        if original is not None:
            rgb = degrade(rgb, original["size"], zlib.crc32(str(path).encode()))
        out[key] = _measure(pipeline, rgb, profile)
        if (i + 1) % 500 == 0:
            print(
                f"  {i + 1}/{len(paths) + len(labelled)} photos ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    if len(out) > todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(out))
    return {k: v for k, v in out.items() if v is not None}


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


def profile_distance(profile: str, a: dict, b: dict) -> float:
    """The distance the profile's recognition compares: cosine for one model, the fused score for several."""
    cosine = {m: 1.0 - float(np.dot(a["embeddings"][m], b["embeddings"][m])) for m in profile_models(profile)}
    if len(cosine) == 1:
        return next(iter(cosine.values()))
    return float(fused_distance(calibration_key(profile), {m: np.array([d]) for m, d in cosine.items()})[0])


def genuine_outcomes(
    features: dict[str, dict], profile: str
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Per face: genuine pairs and how many the profile accepts at FMR 1e-3."""
    from calibrate import collect

    items, listed = collect()
    cut = threshold(calibration_key(profile), 1e-3)
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
    # A degraded copy is paired with the other photos of its identity (not its own original); only its own
    # outcome counts, so the originals' outcomes stay those of the photos as published.
    copies = {
        (a + DEGRADED, b)
        for members in groups.values()
        for a in members
        for b in members
        if a != b and a + DEGRADED in features
    }
    group_of = {
        path: f"{dataset}/{identity}" for (dataset, identity), members in groups.items() for path in members
    }
    trials: dict[str, int] = defaultdict(int)
    accepted: dict[str, int] = defaultdict(int)
    for a, b in genuine:
        distance = profile_distance(profile, features[a], features[b])
        for key in (a, b):
            trials[key] += 1
            accepted[key] += int(distance <= cut)
    for a, b in copies:
        trials[a] += 1
        accepted[a] += int(profile_distance(profile, features[a], features[b]) <= cut)
    keys = sorted(trials)
    # Identity of each face (listed pairs without one: the photo itself), for a held-out split by person.
    labels = [group_of.get(k.removesuffix(DEGRADED), k) for k in keys]
    return keys, labels, np.array([trials[k] for k in keys]), np.array([accepted[k] for k in keys])


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
# fit comes out positive, e.g. pose on these sets, is left out and refitted).
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


def predict(model: dict, x: np.ndarray) -> np.ndarray:
    """A fitted model's predicted share of accepted genuine pairs (as attributes.recognition_quality)."""
    z = (x - np.array(model["mean"])) / np.array(model["scale"])
    return 1 / (1 + np.exp(-(z @ np.array(model["coef"]) + model["intercept"])))


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half); None if one
    class is empty."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return round(float(greater + ties / 2), 3)


def evaluate(predicted: np.ndarray, trials: np.ndarray, accepted: np.ndarray, rows: np.ndarray) -> dict:
    """Per predicted level: faces and the share of their genuine pairs accepted; AUC for "accepted most of
    the time" (a face's pairs accepted >= 50 %)."""
    rate = accepted / trials
    out: dict = {"faces": int(rows.sum()), "auc": auc(predicted[rows], rate[rows] >= 0.5)}
    for name, lo, hi in (("low", 0.0, 0.25), ("medium", 0.25, 0.5), ("high", 0.5, 1.01)):
        sel = rows & (predicted >= lo) & (predicted < hi)
        out[name] = {
            "faces": int(sel.sum()),
            "genuine_accepted": round(float(accepted[sel].sum() / max(trials[sel].sum(), 1)), 3),
            "accepted_most_of_the_time": round(float((rate[sel] >= 0.5).mean()) if sel.any() else 0.0, 3),
        }
    return out


def fit_recognition(features: dict[str, dict], profile: str, previous: dict | None) -> dict:
    keys, groups, trials, accepted = genuine_outcomes(features, profile)
    x = feature_matrix([features[k] for k in keys])
    # Held out of the fit: CACD-VS (tests/accuracy/test_quality.py checks the prediction on it) and one
    # identity in four of the other sets (by a hash of the identity, so a person's photos stay together).
    cacd = np.array([HELD_OUT in k for k in keys])
    identities = np.array([zlib.crc32(g.encode()) % 4 == 0 for g in groups]) & ~cacd
    held = cacd | identities
    mean, scale = x[~held].mean(0), x[~held].std(0) + 1e-9
    z = (x - mean) / scale
    w = fit_monotone(z[~held], trials[~held], accepted[~held])
    model = {
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in w[:-1]],
        "intercept": round(float(w[-1]), 6),
    }
    degraded = np.array([k.endswith(DEGRADED) for k in keys])
    splits = (
        ("fit", ~held),
        ("held_out_identities", identities & ~degraded),
        ("held_out_identities_degraded", identities & degraded),
        ("held_out_cacd_vs", cacd),
    )
    rate = accepted / trials
    report = {
        "model": calibration_key(profile),
        "profile": profile,
        "fmr": 1e-3,
        "features": list(FEATURES),
        **model,
        "levels": [0.25, 0.5],
        "faces": int((~held & ~degraded).sum()),
        "genuine_pairs": int(trials[~held & ~degraded].sum() // 2),
        "degraded_copies": int((~held & degraded).sum()),
        "degraded_copy_pairs": int(trials[~held & degraded].sum()),
        "overall_accepted": round(float(accepted[~held].sum() / trials[~held].sum()), 3),
        "faces_accepted_most_of_the_time": round(float((rate[~held] >= 0.5).mean()), 3),
        "by_predicted_level": {
            name: evaluate(predict(model, x), trials, accepted, rows) for name, rows in splits
        },
    }
    unchanged = previous and all(previous.get(k) == v for k, v in model.items())
    if unchanged and "previous_model_on_this_fit" in previous:  # a rerun keeps the comparison it made
        report["previous_model_on_this_fit"] = previous["previous_model_on_this_fit"]
    elif (
        previous and list(previous.get("features", [])) == list(FEATURES) and "by_predicted_level" in previous
    ):
        # The model this one replaces, scored on the same faces and outcomes (this profile's).
        report["previous_model_on_this_fit"] = {
            "model": previous.get("model"),
            **{name: evaluate(predict(previous, x), trials, accepted, rows) for name, rows in splits},
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("levels", "recognition", "all"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=get_settings().embedding_profile,
        help="embedding profile whose FMR 1e-3 outcomes the recognition model predicts (default: the service's)",
    )
    parser.add_argument(
        "--cache", type=Path, help="feature cache (default /tmp/facequeue-quality-<profile>.json)"
    )
    args = parser.parse_args()
    cache = args.cache or Path(f"/tmp/facequeue-quality-{args.profile}.json")
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
        previous = table.get("recognition")
        table["recognition"] = fit_recognition(face_features(cache, args.profile), args.profile, previous)
        print(json.dumps(table["recognition"], indent=1))
    if not args.no_write:
        QUALITY_CALIBRATION_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {QUALITY_CALIBRATION_PATH}")


if __name__ == "__main__":
    main()
