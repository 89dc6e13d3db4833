"""Shared by the accuracy tests and benchmarks/pipeline.py: data sets, detection AP, verification metrics."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from facequeue.settings import Settings

if TYPE_CHECKING:
    from workers.pipeline.analyse import FacePipeline

DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
WIDER = DATA / "detection" / "wider_train_subset"
MIN_GT_SIDE = 32  # GT faces smaller than this (or marked invalid) are ignored, with detections on them


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def research_pipeline(settings: Settings, int8: bool = False) -> FacePipeline:
    """One pipeline that embeds with every embedding model (FaceNet, SFace, dlib; int8 FaceNet too when
    asked), so each photo is detected once however many profiles are measured on it."""
    from workers.models.runtime import create_session
    from workers.pipeline.analyse import FacePipeline, _load_embedder

    settings = settings.model_copy(update={"embedding_profile": "facenet-dlib", "int8_embeddings": False})
    pipeline = FacePipeline.from_settings(settings)

    def factory(model: Path | bytes) -> object:
        return create_session(model, settings)

    pipeline.embedders.append(_load_embedder("sface", settings, factory))
    if int8:
        int8_settings = settings.model_copy(update={"int8_embeddings": True})
        ensure_int8_facenet(int8_settings)
        pipeline.embedders.append(_load_embedder("facenet", int8_settings, factory))
    return pipeline


def ensure_int8_facenet(settings: Settings) -> Path:
    """The int8 FaceNet in the model cache, calibrated on FG-NET photos (used by no verification set)."""
    from workers.pipeline.analyse import build_int8_facenet, int8_facenet_path

    path = int8_facenet_path(settings)
    if not path.is_file():
        calibration = sorted((DATA / "landmarks" / "fgnet" / "images").glob("*.JPG"))[::3]
        build_int8_facenet(settings, (rgb(p) for p in calibration))
    return path


# ---------------------------------------------------------------- detection


@dataclass
class GroundTruth:
    path: Path
    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    ignore: np.ndarray  # (K,) bool


# Size bands standing in for WIDER's easy / medium / hard splits (defined on its validation set only):
# GT faces whose shorter side is below the band's minimum are ignored.
WIDER_BANDS = {"easy": 50, "medium": 30, "hard": 10}


def wider_ground_truth(min_side: int = MIN_GT_SIDE) -> list[GroundTruth]:
    """The official WIDER format: path, count, then `x y w h blur expression illumination invalid occlusion pose`."""
    lines = (WIDER / "wider_face_bbx_gt.txt").read_text().split("\n")
    out, i = [], 0
    while i < len(lines) and lines[i].strip():
        path = WIDER / "images" / lines[i].strip()
        count = int(lines[i + 1])
        rows = [list(map(int, lines[i + 2 + k].split()[:10])) for k in range(count)]
        i += 2 + max(count, 1)  # a count of 0 is followed by one line of zeros
        if not rows:
            continue
        arr = np.array(rows, float)
        boxes = np.column_stack([arr[:, 0], arr[:, 1], arr[:, 0] + arr[:, 2], arr[:, 1] + arr[:, 3]])
        ignore = (arr[:, 7] == 1) | (np.minimum(arr[:, 2], arr[:, 3]) < min_side)
        out.append(GroundTruth(path, boxes, ignore))
    return out


def false_detections(truths: list[GroundTruth], boxes: list[np.ndarray], threshold: float = 0.5) -> int:
    """Detections that overlap no GT face at all (any size, invalid ones included) at IoU >= threshold."""
    count = 0
    for gt, found in zip(truths, boxes, strict=True):
        if len(found):
            count += int((iou(found, gt.boxes).max(1) < threshold).sum()) if len(gt.boxes) else len(found)
    return count


def non_face_photos() -> dict[str, np.ndarray]:
    """Photos with no human face that anyone may use: scikit-image's samples (CC0 / public domain)."""
    from skimage import data

    names = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "coins", "moon")
    names += ("page", "text", "horse", "brick", "grass", "gravel", "retina", "colorwheel", "logo", "clock")
    names += ("stereo_motorcycle", "checkerboard", "binary_blobs", "shepp_logan_phantom")
    out = {}
    for name in names:
        image = getattr(data, name)()
        image = np.asarray(image[0] if isinstance(image, tuple) else image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        elif image.dtype != np.uint8:
            image = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-9)).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out[name] = np.ascontiguousarray(image[..., :3])
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1, y1, x2, y2 boxes."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def average_precision(
    truths: list[GroundTruth], detections: list[tuple[np.ndarray, np.ndarray]], threshold: float = 0.5
) -> tuple[float, float]:
    """AP (all-point interpolation) and recall at an IoU threshold over a set of images.

    A detection matching an ignored GT face is neither a true nor a false positive.
    """
    records: list[tuple[float, int]] = []  # (score, 1 = TP / 0 = FP)
    positives = 0
    for gt, (boxes, scores) in zip(truths, detections, strict=True):
        valid = ~gt.ignore
        positives += int(valid.sum())
        overlaps = iou(boxes, gt.boxes) if len(boxes) else np.zeros((0, len(gt.boxes)))
        taken = np.zeros(len(gt.boxes), bool)
        for d in np.argsort(-scores, kind="stable"):
            candidates = np.where(valid & ~taken & (overlaps[d] >= threshold))[0]
            if candidates.size:
                taken[candidates[np.argmax(overlaps[d, candidates])]] = True
                records.append((float(scores[d]), 1))
            elif np.any(gt.ignore & (overlaps[d] >= threshold)):
                continue
            else:
                records.append((float(scores[d]), 0))
    if not records:
        return 0.0, 0.0
    records.sort(key=lambda r: -r[0])
    hits = np.array([r[1] for r in records])
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / positives
    # All-point interpolation: precision envelope integrated over recall.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((envelope * steps).sum()), float(recall[-1])


# ---------------------------------------------------------------- verification


@dataclass
class PairSet:
    name: str
    pairs: list[tuple[Path, Path, bool]]


def cacd_pairs() -> PairSet:
    folder = DATA / "identity" / "cacd_vs"
    with (folder / "pairs.csv").open() as f:
        rows = list(csv.DictReader(f))
    return PairSet(
        "cacd_vs", [(folder / r["image_a"], folder / r["image_b"], r["same"] == "1") for r in rows]
    )


def all_pairs(name: str, groups: dict[str, list[Path]]) -> PairSet:
    """Every same and different pair of a labelled photo set."""
    items = [(path, who) for who, paths in sorted(groups.items()) for path in sorted(paths)]
    pairs = [(a, b, wa == wb) for (a, wa), (b, wb) in itertools.combinations(items, 2)]
    return PairSet(name, pairs)


def lag_groups() -> dict[str, list[Path]]:
    folder = DATA / "identity" / "lag"
    return {
        d.name: sorted(p for p in d.rglob("*") if p.is_file()) for d in sorted(folder.iterdir()) if d.is_dir()
    }


def deepface_groups() -> dict[str, list[Path]]:
    """The deepface unit-test photos, grouped by the same-person groups listed in data/README.md."""
    folder = DATA / "misc" / "deepface_tests_unit_dataset"
    groups = [
        (1, 2, 4, 5, 6, 7, 10, 11),
        (26, 27, 28, 42, 43, 44, 45, 46),
        (8, 9, 47, 48, 49, 50, 51),
        (3, 12, 53, 54, 55, 56),
        (13, 14, 15, 57, 58),
        (29, 30, 31, 32, 33),
        (16, 17, 59, 61, 62),
        (38, 39, 40, 41),
        (34, 35, 36, 37),
        (18, 19, 67),
        (24, 25),
        (22, 23),
        (20, 21),
    ]
    files = {p.stem: p for p in folder.glob("img*.*")}
    return {f"g{i}": [files[f"img{n}"] for n in g if f"img{n}" in files] for i, g in enumerate(groups)}


def face_api_groups() -> dict[str, list[Path]]:
    folder = DATA / "misc" / "face-api.js" / "examples_images"
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        for d in sorted(folder.iterdir())
        if d.is_dir() and any(d.iterdir())
    }


def best_threshold_accuracy(same: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Best accuracy over thresholds (score >= t means same) and that threshold."""
    order = np.argsort(-score, kind="stable")
    s, sc = same[order], score[order]
    # Accepting the top k pairs: TP = same among them, TN = different among the rest.
    tp = np.concatenate([[0], np.cumsum(s)])
    tn = (~s).sum() - np.concatenate([[0], np.cumsum(~s)])
    acc = (tp + tn) / len(s)
    k = int(np.argmax(acc))
    threshold = float(sc[k - 1]) if k > 0 else float(sc[0]) + 1e-6
    return float(acc[k]), threshold


def cross_validated_accuracy(same: np.ndarray, score: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    """Accuracy with the threshold chosen on the other folds (LFW protocol style)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(same)) % folds
    right = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        _, threshold = best_threshold_accuracy(same[train], score[train])
        right += int(((score[test] >= threshold) == same[test]).sum())
    return right / len(same)


def tar_at_far(same: np.ndarray, score: np.ndarray, far: float) -> float:
    """True accept rate at the threshold that accepts at most `far` of the different pairs."""
    impostor = np.sort(score[~same])[::-1]
    allowed = int(np.floor(far * len(impostor)))
    threshold = impostor[allowed] if allowed < len(impostor) else -np.inf
    return float((score[same] > threshold).mean())


def balanced(same: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of every same pair and as many different pairs drawn at random (LFW-style 50/50 accuracy)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.where(same)[0], np.where(~same)[0]
    if len(neg) > len(pos):
        neg = np.sort(rng.choice(neg, len(pos), replace=False))
    return np.concatenate([pos, neg])


def summarise(same: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Accuracies on a balanced subset (all-pairs sets are mostly different pairs); TAR on all pairs."""
    idx = balanced(same)
    acc, _ = best_threshold_accuracy(same[idx], score[idx])
    return {
        "pairs": float(len(same)),
        "same": float(same.sum()),
        "best_acc": acc,
        "cv_acc": cross_validated_accuracy(same[idx], score[idx]),
        "tar@far1e-2": tar_at_far(same, score, 1e-2),
        "tar@far1e-3": tar_at_far(same, score, 1e-3),
    }


def score_pairs(
    pairs: list[tuple[Path, Path, bool]], embed: Callable[[Path], np.ndarray | None], compare: Callable
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of all pairs; a photo without a face gets the lowest score (counted as a failure to enrol)."""
    cache: dict[Path, np.ndarray | None] = {}

    def get(path: Path) -> np.ndarray | None:
        if path not in cache:
            cache[path] = embed(path)
        return cache[path]

    same, scores = [], []
    for a, b, s in pairs:
        ea, eb = get(a), get(b)
        scores.append(-np.inf if ea is None or eb is None else compare(ea, eb))
        same.append(s)
    missing = sum(v is None for v in cache.values())
    return np.array(same), np.array(scores, float), missing


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------- open-set identification


def identity_groups() -> dict[str, dict[str, list[Path]]]:
    """Per data set, the people with at least two photos: LAG (150 people, large age gaps) and CACD-VS's
    400 same pairs (400 different celebrities, two photos each).

    Data sets are kept apart: their celebrities overlap (Jennifer Aniston is in LAG, CACD-VS and
    deepface's set), so a person of one set may not serve as a stranger to another set's gallery. The
    small sets (face-api.js, deepface) are left out: a handful of people makes no open-set gallery.
    """
    lag = {who: list(paths) for who, paths in lag_groups().items() if len(paths) >= 2}
    cacd = {f"pair{i}": [a, b] for i, (a, b, same) in enumerate(cacd_pairs().pairs) if same}
    return {"lag": lag, "cacd_vs": cacd}


@dataclass
class OpenSetResult:
    enrolled: int
    mated: int
    non_mated: int
    tpir: float  # mated probes identified (right person first, score over the threshold)
    rank1: float  # mated probes whose best gallery person is right, whatever the score
    threshold: float


@dataclass
class OpenSetSplit:
    gallery: dict[str, Path]  # enrolled person -> the photo enrolled
    mated: list[tuple[str, Path]]  # (enrolled person, another photo of them)
    non_mated: list[Path]  # photos of people not enrolled


def open_set_split(groups: dict[str, dict[str, list[Path]]], seed: int = 0) -> dict[str, OpenSetSplit]:
    """Per data set, half the people enrolled (first photo in the gallery, the rest mated probes), and
    every photo of the other half a non-mated probe (searched in its own data set's gallery)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, by_person in groups.items():
        people = sorted(by_person)
        enrolled = set(rng.permutation(people)[: len(people) // 2].tolist())
        out[name] = OpenSetSplit(
            gallery={p: by_person[p][0] for p in people if p in enrolled},
            mated=[(p, path) for p in people if p in enrolled for path in by_person[p][1:]],
            non_mated=[path for p in people if p not in enrolled for path in by_person[p]],
        )
    return out


def open_set_identification(
    groups: dict[str, dict[str, list[Path]]],
    embed: Callable[[Path], object | None],
    similarity: Callable[[list, list], np.ndarray],
    fpir: float = 0.01,
    seed: int = 0,
) -> OpenSetResult:
    """TPIR at FPIR: one threshold over all data sets lets `fpir` of the non-mated probes match anyone.

    `similarity(probes, gallery)` scores (P, G) embeddings, higher = more alike. A gallery photo without a
    face: that person is not enrolled; a probe without a face: missed (mated) or silent (non-mated).
    """
    n_best, m_best, m_right, enrolled, mated_total, non_mated_total = [], [], [], 0, 0, 0
    for split in open_set_split(groups, seed).values():
        names = [p for p in split.gallery if embed(split.gallery[p]) is not None]
        g = [embed(split.gallery[p]) for p in names]
        enrolled += len(names)
        mated = [(p, path) for p, path in split.mated if p in set(names)]
        mated_total += len(mated)
        non_mated_total += len(split.non_mated)
        n_emb = [e for e in (embed(path) for path in split.non_mated) if e is not None]
        n_best.append(similarity(n_emb, g).max(axis=1))
        found = [(p, e) for p, e in ((p, embed(path)) for p, path in mated) if e is not None]
        scores = similarity([e for _, e in found], g)
        m_best.append(scores.max(axis=1))
        m_right.append(
            np.array([names[b] == p for b, (p, _) in zip(scores.argmax(axis=1), found, strict=True)])
        )
    ranked = np.sort(np.concatenate(n_best))[::-1]
    allowed = int(np.floor(fpir * non_mated_total))
    threshold = float(ranked[allowed]) if allowed < len(ranked) else -np.inf
    right = np.concatenate(m_right)
    passed = np.concatenate(m_best) > threshold
    return OpenSetResult(
        enrolled=enrolled,
        mated=mated_total,
        non_mated=non_mated_total,
        tpir=float((right & passed).sum() / max(mated_total, 1)),
        rank1=float(right.sum() / max(mated_total, 1)),
        threshold=threshold,
    )


# ---------------------------------------------------------------- systems compared on the same photos

FACENET, FACENET_INT8, SFACE, DLIB = (
    "facenet-keras-2024",
    "facenet-keras-2024-int8",
    "sface-2021dec",
    "dlib-resnet-v1",
)
PEER = "face_recognition"
# Our systems by the model ids they compare: the profiles, and combinations measured to choose them.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "fast": (SFACE,),
    "accurate": (SFACE, DLIB),
    "facenet": (FACENET,),
    "facenet int8": (FACENET_INT8,),
    "facenet-dlib": (FACENET, DLIB),
    "facenet+sface": (FACENET, SFACE),
    "facenet+sface+dlib": (FACENET, SFACE, DLIB),
}


def similarity_matrix(system: str) -> Callable[[list, list], np.ndarray]:
    """(P, G) similarities, higher = more alike: cosine for one model, minus the fused z-normalised
    distance (the calibration table's impostor statistics and, for a profile, its fitted weights; equal
    weights for the other combinations) for several; the peer: minus Euclidean."""
    if system == PEER:

        def euclid(a: list, b: list) -> np.ndarray:
            x, y = np.stack(a), np.stack(b)
            return -np.sqrt(np.maximum((x**2).sum(1)[:, None] + (y**2).sum(1)[None] - 2 * x @ y.T, 0))

        return euclid
    from workers.recognition.calibration import fused_distance_from_stats, load_table

    models = SYSTEMS[system]
    table = load_table()["models"]
    stats = {m: table[m.removesuffix("-int8")] for m in models}
    weights = load_table()["fused"].get(system, {}).get("weights")

    def ours(a: list, b: list) -> np.ndarray:
        per_model = {m: 1.0 - np.stack([e[m] for e in a]) @ np.stack([e[m] for e in b]).T for m in models}
        if len(models) == 1:
            return 1.0 - per_model[models[0]]
        return -fused_distance_from_stats(per_model, stats, weights)

    return ours


def pair_scores(
    pairs: list[tuple[Path, Path, bool]], embed: Callable[[Path], object | None], system: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores of all pairs in one vectorised pass; a photo without a face scores -inf (failure to enrol)."""
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    vectors = {p: embed(p) for p in paths}
    have = [p for p in paths if vectors[p] is not None]
    row = {p: i for i, p in enumerate(have)}
    same = np.array([s for _, _, s in pairs])
    scores = np.full(len(pairs), -np.inf)
    ok = np.array([a in row and b in row for a, b, _ in pairs])
    if ok.any():
        matrix = similarity_matrix(system)
        items = [vectors[p] for p in have]
        a_idx = np.array([row[a] for (a, b, _), k in zip(pairs, ok, strict=True) if k])
        b_idx = np.array([row[b] for (a, b, _), k in zip(pairs, ok, strict=True) if k])
        # Row by row over the photos that appear first in a pair: memory stays at (rows, photos).
        full = np.concatenate([matrix(items[i : i + 256], items) for i in range(0, len(items), 256)])
        scores[ok] = full[a_idx, b_idx]
    return same, scores, len(paths) - len(have)
