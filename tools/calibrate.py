"""Compute workers/recognition/calibration.json from the identity-labelled photos in ../shared/data.

Runs our own pipeline with every embedding model (FaceNet, SFace, dlib) on every photo, keeps the best
face, caches the embeddings (default /work/scratch/calibration/embeddings.npz; a cache lacking a model
is completed), builds genuine / impostor pairs and fits the distance -> confidence map and the FMR
thresholds per model and per fused profile (workers/recognition/profiles.py). It also reports
combinations that are no profile (FaceNet + SFace + dlib) and open-set identification (TPIR at FPIR 1 %,
tests/accuracy/common.py's protocol) so the profiles can be chosen on figures.

    python tools/calibrate.py                  # embed (cached), fit, write the table, print the report
    python tools/calibrate.py --no-write       # report only
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers.recognition.calibration import (  # noqa: E402
    TABLE_PATH,
    fit_logistic,
    fit_thresholds,
    fused_distance_from_stats,
)
from workers.recognition.profiles import PROFILES, profile_models  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = ("facenet-keras-2024", "sface-2021dec", "dlib-resnet-v1")
# Fused profiles written to the table, and combinations measured for the report only.
FUSED = {name: profile_models(name) for name, members in PROFILES.items() if len(members) > 1}
REPORT_ONLY = {"facenet+sface": MODELS[:2], "facenet+sface+dlib": MODELS}
WEIGHT_STEP = 0.1
# Tight crops (Glint 112x112, LAG 100x100, ORL 92x112) are padded so the detector sees some context.
PAD_BELOW = 200


def collect() -> tuple[list[tuple[str, str, Path]], list[tuple[Path, Path, bool]]]:
    """(dataset, identity, path) of folder-labelled photos, and explicitly listed pairs (CACD-VS, deepface)."""
    items: list[tuple[str, str, Path]] = []
    for name, folder, pattern in (
        ("lag", DATA / "identity" / "lag", "**/*.png"),
        ("glint", DATA / "identity" / "glint_celeb", "*/*.png"),
        ("orl", DATA / "misc" / "att_faces_ORL", "s*/*.pgm"),
        ("faceapi", DATA / "misc" / "face-api.js" / "examples_images", "*/*.*"),
    ):
        for path in sorted(folder.glob(pattern)):
            rel = path.relative_to(folder)
            items.append((name, rel.parts[0], path))
    pairs: list[tuple[Path, Path, bool]] = []
    cacd = DATA / "identity" / "cacd_vs"
    with open(cacd / "pairs.csv") as f:
        for row in csv.DictReader(f):
            pairs.append((cacd / row["image_a"], cacd / row["image_b"], row["same"] == "1"))
    deep = DATA / "misc" / "deepface_tests_unit_dataset"
    for sheet in ("master.csv", "face-recognition-pivot.csv"):
        with open(deep / sheet) as f:
            for row in csv.DictReader(f):
                a, b = (row[k].replace("deepface/tests/dataset/", "") for k in ("file_x", "file_y"))
                if (deep / a).exists() and (deep / b).exists():
                    decision = row.get("Decision", row.get("decision"))
                    pairs.append((deep / a, deep / b, decision == "Yes"))
    return items, pairs


def embed_all(paths: list[Path], cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Best-face embedding per photo and model; photos without a face are left out."""
    done: dict[str, dict[str, np.ndarray]] = {}
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        keys = [str(k) for k in data["paths"]]
        if all(model in data for model in MODELS):  # a cache from fewer models is recomputed
            for model in MODELS:
                for key, vector in zip(keys, data[model], strict=True):
                    done.setdefault(key, {})[model] = vector
            missing = set(str(k) for k in data["missing"])
        else:
            missing = set()
    else:
        missing = set()
    todo = [p for p in paths if str(p) not in done and str(p) not in missing]
    if todo:
        from PIL import Image

        from facequeue.settings import get_settings
        from tests.accuracy.common import research_pipeline
        from workers.pipeline.decode import decode_image

        pipeline = research_pipeline(get_settings())
        start = time.perf_counter()
        for i, path in enumerate(todo):
            if path.suffix == ".pgm":  # ORL greyscale; the service does not accept PGM uploads
                rgb = np.asarray(Image.open(path).convert("RGB"))
            else:
                rgb = decode_image(path.read_bytes(), 50_000_000, 50_000_000).rgb
            if max(rgb.shape[:2]) < PAD_BELOW:
                pad = max(rgb.shape[:2]) // 2
                rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            faces = pipeline.analyse(rgb, {"bestface"})
            if faces:
                done[str(path)] = {m: faces[0].embeddings[m] for m in MODELS}
            else:
                missing.add(str(path))
            if (i + 1) % 200 == 0 or i + 1 == len(todo):
                print(f"  embedded {i + 1}/{len(todo)} ({time.perf_counter() - start:.0f} s)", flush=True)
                save_cache(cache, done, missing)
    print(f"embeddings: {len(done)} photos with a face, {len(missing)} without")
    return done


def save_cache(cache: Path, done: dict[str, dict[str, np.ndarray]], missing: set[str]) -> None:
    keys = sorted(done)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        paths=np.array(keys),
        missing=np.array(sorted(missing), dtype=str),
        **{m: np.stack([done[k][m] for k in keys]) for m in MODELS},
    )


def build_pairs(
    items: list[tuple[str, str, Path]], listed: list[tuple[Path, Path, bool]], emb: dict[str, dict]
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, tuple[int, int]]]:
    """Cosine distance per model for all pairs, the same/different label and per-source pair counts."""
    a_idx: list[np.ndarray] = []
    b_idx: list[np.ndarray] = []
    same: list[np.ndarray] = []
    keys = sorted(emb)
    row = {k: i for i, k in enumerate(keys)}
    counts: dict[str, tuple[int, int]] = {}
    by_dataset: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for dataset, identity, path in items:
        if str(path) in row:
            by_dataset[dataset].append((identity, row[str(path)]))
    # All pairs within each folder-labelled data set (impostors only within a data set: no cross-set overlap).
    for dataset, members in by_dataset.items():
        ids = np.array([m[0] for m in members])
        rows = np.array([m[1] for m in members])
        i, j = np.triu_indices(len(members), k=1)
        a_idx.append(rows[i])
        b_idx.append(rows[j])
        s = ids[i] == ids[j]
        same.append(s)
        counts[dataset] = (int(s.sum()), int((~s).sum()))
    for source in ("cacd_vs", "deepface"):
        chosen = [p for p in listed if source in str(p[0]) and str(p[0]) in row and str(p[1]) in row]
        a_idx.append(np.array([row[str(p[0])] for p in chosen], dtype=np.int64))
        b_idx.append(np.array([row[str(p[1])] for p in chosen], dtype=np.int64))
        s = np.array([p[2] for p in chosen], dtype=bool)
        same.append(s)
        counts[source] = (int(s.sum()), int((~s).sum()))
    a = np.concatenate(a_idx)
    b = np.concatenate(b_idx)
    distances = {}
    for model in MODELS:
        matrix = np.stack([emb[k][model] for k in keys]).astype(np.float32)
        distances[model] = 1.0 - np.einsum("ij,ij->i", matrix[a], matrix[b])
    return distances, np.concatenate(same), counts


def tar_at(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    threshold = np.quantile(impostor, fmr)
    return float(np.mean(genuine <= threshold))


def fit_weights(
    members: tuple[str, ...], distances: dict, stats: dict, same: np.ndarray, source: np.ndarray
) -> dict[str, float]:
    """Fusion weights on a 0.1 grid (each model >= 0.1) that maximise TAR at FMR 1e-3 averaged over the
    data sets (each set counts once, so the largest cannot choose alone); the most even weights win ties."""
    steps = round(1 / WEIGHT_STEP)
    grid = [w for w in itertools.product(range(1, steps), repeat=len(members)) if sum(w) == steps]
    best, best_score = None, -1.0
    for w in sorted(grid, key=lambda w: max(w) - min(w)):
        weights = {m: v / steps for m, v in zip(members, w, strict=True)}
        d = fused_distance_from_stats({m: distances[m] for m in members}, stats, weights)
        threshold = np.quantile(d[~same], 1e-3)
        score = float(np.mean([np.mean(d[(source == n) & same] <= threshold) for n in np.unique(source)]))
        if score > best_score + 1e-9:
            best, best_score = weights, score
    assert best is not None
    return best


def key_distance(
    members: tuple[str, ...], stats: dict, weights: dict[str, float] | None = None
) -> Callable[[list[dict], list[dict]], np.ndarray]:
    """(P, G) distances of one model (cosine) or of a fusion (mean z-score) between embedding dicts."""

    def distance(probes: list[dict], gallery: list[dict]) -> np.ndarray:
        per_model = {
            m: 1.0 - np.stack([p[m] for p in probes]) @ np.stack([g[m] for g in gallery]).T for m in members
        }
        if len(members) == 1:
            return per_model[members[0]]
        return fused_distance_from_stats(per_model, stats, weights)

    return distance


def rank1_lag(emb: dict[str, dict], distance: Callable) -> float:
    """LAG identification: gallery = the adult photos, probes = the young photos (`y/`)."""
    gallery, gallery_ids, probes, probe_ids = [], [], [], []
    for key, vectors in emb.items():
        path = Path(key)
        if "/identity/lag/" not in key:
            continue
        if path.parent.name == "y":
            probes.append(vectors)
            probe_ids.append(path.parent.parent.name)
        else:
            gallery.append(vectors)
            gallery_ids.append(path.parent.name)
    best = np.array(gallery_ids)[np.argmin(distance(probes, gallery), axis=1)]
    return float(np.mean(best == np.array(probe_ids)))


def open_set(emb: dict[str, dict], distance: Callable) -> tuple[float, float, int]:
    """TPIR at FPIR 1 %, rank-1 and gallery size on tests/accuracy's open-set split of these photos."""
    from tests.accuracy.common import identity_groups, open_set_identification

    result = open_set_identification(
        identity_groups(), lambda p: emb.get(str(p)), lambda a, b: -distance(a, b), fpir=0.01
    )
    return result.tpir, result.rank1, result.enrolled


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/work/scratch/calibration/embeddings.npz"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    items, listed = collect()
    paths = sorted({p for _, _, p in items} | {p for a, b, _ in listed for p in (a, b)})
    emb = embed_all(paths, args.cache)
    distances, same, counts = build_pairs(items, listed, emb)
    for source, (g, i) in counts.items():
        print(f"  {source:10s} genuine {g:6d}  impostor {i:7d}")
    print(f"  {'total':10s} genuine {int(same.sum()):6d}  impostor {int((~same).sum()):7d}")

    table: dict = {"distance": "cosine distance 1 - a.b of L2-normalised embeddings", "models": {}}
    stats = {}
    for model in MODELS:
        impostor = distances[model][~same]
        stats[model] = {"impostor_mean": float(impostor.mean()), "impostor_std": float(impostor.std())}
    keys = {m: (m,) for m in MODELS} | FUSED | REPORT_ONLY
    # Pairs are concatenated in the order of `counts`: the data set of each pair.
    source = np.repeat(list(counts), [g + i for g, i in counts.values()])
    weights: dict[str, dict[str, float]] = {}
    for key, members in keys.items():
        if len(members) > 1:
            weights[key] = fit_weights(members, distances, stats, same, source)
            distances[key] = fused_distance_from_stats(
                {m: distances[m] for m in members}, stats, weights[key]
            )
            print(f"fusion weights {key}: {weights[key]}")
    threshold_1e3: dict[str, float] = {}
    for key, members in keys.items():
        d = distances[key]
        genuine, impostor = d[same], d[~same]
        thresholds = fit_thresholds(impostor)
        distance = key_distance(members, stats, weights.get(key))
        tpir, rank1, enrolled = open_set(emb, distance)
        entry: dict = {
            "genuine_pairs": int(same.sum()),
            "impostor_pairs": int((~same).sum()),
            "logistic": fit_logistic(genuine, impostor),
            "thresholds": thresholds,
            # TAR at the table's thresholds (1e-5 and below are tail fits: the data cannot resolve them).
            "tar": {
                "0.01": tar_at(genuine, impostor, 1e-2),
                **{f: float(np.mean(genuine <= t["threshold"])) for f, t in thresholds.items()},
            },
            "rank1_lag": rank1_lag(emb, distance),
            "open_set": {"tpir_at_fpir_0.01": tpir, "rank1": rank1, "enrolled": enrolled},
        }
        if key in stats:
            entry.update(stats[key])
        if key not in REPORT_ONLY:
            table["models"][key] = entry
            threshold_1e3[key] = thresholds["0.001"]["threshold"]
        tars = "  ".join(f"TAR@{f}={v:.3f}" for f, v in entry["tar"].items() if float(f) >= 1e-4)
        thr = "  ".join(
            f"{f}:{v['threshold']:.4f}{'*' if v['extrapolated'] else ''}"
            for f, v in entry["thresholds"].items()
        )
        print(
            f"{key:20s} {tars}  rank1(LAG young->old)={entry['rank1_lag']:.3f}  "
            f"open-set TPIR@FPIR1%={tpir:.3f} rank1={rank1:.3f} ({enrolled} enrolled)"
        )
        print(f"{'':20s} thresholds {thr}  (* = tail fit)  logistic {entry['logistic']}")
    table["fused"] = {
        name: {
            "models": list(members),
            "weights": weights[name],
            "method": "weighted mean of per-model z-scores (impostor mean/std); weights maximise the "
            "per-data-set mean of TAR at FMR 1e-3",
        }
        for name, members in FUSED.items()
    }
    # Per-source TAR at the FMR 1e-3 threshold.
    table["sources"] = {}
    for name, (g, i) in counts.items():
        mask = (source == name) & same
        tars = {k: float(np.mean(distances[k][mask] <= threshold_1e3[k])) for k in threshold_1e3}
        table["sources"][name] = {"genuine": g, "impostor": i, "tar_at_fmr_1e-3": tars}
        print(f"  {name:10s} TAR@1e-3 " + "  ".join(f"{k} {v:.3f}" for k, v in tars.items()))
    if not args.no_write:
        TABLE_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {TABLE_PATH}")


if __name__ == "__main__":
    main()
