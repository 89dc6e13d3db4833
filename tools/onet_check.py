"""Can MTCNN's O-Net tell the frontal puppy of tests/photos.py from real faces? Its face probability on
YuNet's detections: WIDER faces found at >= 0.75 and at 0.6-0.75 (auto mode, IoU >= 0.5 with an annotated
face), WIDER detections >= 0.6 that match no face, the free portraits, the animals (their YuNet detections
at >= 0.3 and the 27 hand-placed boxes of each), and the puppy as it is, doubled, mirrored, halved and cut
to its head. Each at a few crop scales (square of max(w, h) x scale), mirrored, and as the detector scores it (the mean
of four crops, FaceDetector.human_scores); also the distance of O-Net's five points from YuNet's. Prints
quantiles, per threshold the share of faces kept, and the faces lost when only boxes from a size on are
checked; `--save FILE.npz` keeps the raw scores.

    nice -n 15 python tools/onet_check.py     # about 3 CPU minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facequeue.settings import get_settings  # noqa: E402
from tests.accuracy.common import iou, rgb, wider_ground_truth  # noqa: E402
from tests.photos import ANIMAL_FACES, animal_photos, astronaut, hopper, placed_faces, puppy  # noqa: E402
from tools.nonface_signals import puppy_views  # noqa: E402
from workers.models.fetch import model_path  # noqa: E402
from workers.models.onet import ONet, crop_chips, square_boxes  # noqa: E402
from workers.models.runtime import create_session  # noqa: E402
from workers.models.yunet import Detections, YuNet  # noqa: E402
from workers.pipeline.detect import FaceDetector  # noqa: E402

SCALES = (1.0, 1.1, 1.2)
# Rows of `probs`; "detector" is FaceDetector.human_scores, the mean of the 1.0 / 1.1 crops and mirrors.
VARIANTS = ("1.0", "1.1", "1.2", "1.0 mirrored", "1.1 mirrored", "points", "detector")
GATES = (0, 48, 64, 80, 100)  # short box sides (px) from which the detector's score is checked
THRESHOLDS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save", type=Path)
    parser.add_argument("--limit", type=int, default=0, help="first N WIDER images only")
    args = parser.parse_args()
    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider", "intra_op_threads": 1})
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    detector = FaceDetector(session, threshold=0.3, mode="auto")  # no second look: raw YuNet
    onet = ONet.from_file(model_path("mtcnn_onet", settings), lambda p: create_session(p, settings))
    checker = FaceDetector(session, threshold=0.3, onet_loader=lambda: onet)

    def probs(image: np.ndarray, boxes: np.ndarray, marks: np.ndarray | None = None) -> np.ndarray:
        """(len(VARIANTS), N): face probabilities of the crops at each scale, of the mirrored crops, and
        the mean distance of O-Net's five points from YuNet's (in crop sides; nan without YuNet's)."""
        rows = [onet.face_probability(crop_chips(image, boxes, scales=(s,))) for s in SCALES]
        rows += [onet.face_probability(crop_chips(image, boxes, scales=(s,))[:, :, ::-1]) for s in SCALES[:2]]
        _, _, pts = onet.run(crop_chips(image, boxes))
        square = square_boxes(boxes).astype(float)
        side = square[:, 2] - square[:, 0]
        xy = np.stack([pts[:, :5], pts[:, 5:]], -1) * side[:, None, None] + square[:, None, :2]
        far = (
            np.linalg.norm(xy - marks, axis=2).mean(1) / side
            if marks is not None
            else np.full(len(boxes), np.nan)
        )
        (mean,) = checker.human_scores([image], [Detections(boxes, np.ones(len(boxes)), marks)])
        return np.stack(rows + [far, mean])

    buckets: dict[str, list[np.ndarray]] = {"confident": [], "low 0.6-0.75": [], "unmatched >= 0.6": []}
    sizes: list[np.ndarray] = []
    low_sizes: list[np.ndarray] = []
    truths = wider_ground_truth(0)
    for gt in truths[: args.limit or None]:
        image = rgb(gt.path)
        det = detector.detect(image)
        det_iou = iou(det.boxes, gt.boxes).max(1) if len(det) and len(gt.boxes) else np.zeros(len(det))
        matched = det_iou >= 0.5
        p = probs(image, det.boxes, det.landmarks)
        buckets["confident"].append(p[:, matched & (det.scores >= 0.75)])
        buckets["low 0.6-0.75"].append(p[:, matched & (det.scores >= 0.6) & (det.scores < 0.75)])
        buckets["unmatched >= 0.6"].append(p[:, ~matched & (det.scores >= 0.6)])
        short = np.minimum(*(det.boxes[:, 2:] - det.boxes[:, :2]).T)
        sizes.append(short[matched & (det.scores >= 0.75)])
        low_sizes.append(short[matched & (det.scores >= 0.6) & (det.scores < 0.75)])
    wider = {k: np.concatenate(v, axis=1) for k, v in buckets.items()}

    others: dict[str, np.ndarray] = {}
    for name, image in ({"astronaut": astronaut(), "hopper": hopper()} | animal_photos()).items():
        det = detector.detect(image)
        if len(det):
            others[f"{name} YuNet ({', '.join(f'{s:.2f}' for s in det.scores)})"] = probs(
                image, det.boxes, det.landmarks
            )
        if name in ANIMAL_FACES:
            others[f"{name} 27 placed boxes (max)"] = probs(
                image, *(lambda p: (p.boxes, p.landmarks))(placed_faces(*ANIMAL_FACES[name]))
            )
    views = puppy_views() | {"head cut": puppy()[120:512, 140:580]}
    for scale in (0.2, 0.25, 0.3, 0.4, 0.7, 1.5, 3):
        pil = Image.fromarray(puppy())
        views[f"x{scale}"] = np.asarray(
            pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.BILINEAR)
        )
        views[f"x{scale} mirrored"] = np.ascontiguousarray(views[f"x{scale}"][:, ::-1])
    for name, image in views.items():
        det = detector.detect(image)
        label = (
            ", ".join(
                f"{s:.2f} {min(b[2] - b[0], b[3] - b[1]):.0f}px"
                for s, b in zip(det.scores, det.boxes, strict=True)
            )
            or "none"
        )
        others[f"puppy {name} YuNet ({label})"] = (
            probs(image, det.boxes, det.landmarks) if len(det) else np.zeros((len(VARIANTS), 0))
        )

    print(f"{len(truths[: args.limit or None])} WIDER images")
    for i, scale in enumerate(VARIANTS):
        print(f"\n== {scale}")
        for name, values in wider.items():
            v = values[i]
            q = np.percentile(v, [0.1, 0.25, 0.5, 1, 5, 50]) if len(v) else []
            print(
                f"WIDER {name:18s} n={len(v):5d} quantiles 0.1/0.25/0.5/1/5/50 %: "
                + " ".join(f"{x:.4f}" for x in q)
            )
            print("   kept at " + ", ".join(f">={t}: {np.mean(v >= t) * 100:.2f} %" for t in THRESHOLDS))
        for name, values in others.items():
            v = values[i]
            shown = f"max {v.max():.4f}" if "placed" in name else " ".join(f"{x:.4f}" for x in v)
            print(f"{name:45s} {shown}")
    small = np.concatenate(sizes)
    conf = wider["confident"][-1]  # the detector's score
    for lo, hi in ((0, 20), (20, 40), (40, 80), (80, 10_000)):
        sel = (small >= lo) & (small < hi)
        if sel.any():
            print(
                f"confident faces {lo}-{hi} px: n={sel.sum()}, detector score 0.5 % quantile "
                f"{np.percentile(conf[sel], 0.5):.4f}"
            )
    print(
        "\nThe detector's score (mean of 4) checked from a short side of S px on: faces lost at threshold t"
    )
    low, low_size = wider["low 0.6-0.75"][-1], np.concatenate(low_sizes)
    puppies = np.concatenate(
        [v[-1] for k, v in others.items() if k.startswith("puppy ") and "placed" not in k]
    )
    print(f"  puppy, YuNet's detections on all views: max {puppies.max():.4f}")
    for t in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5):
        cells = []
        for gate in GATES:
            lost = int(((wider["confident"][-1] < t) & (small >= gate)).sum())
            lost_low = int(((low < t) & (low_size >= gate)).sum())
            cells.append(f">={gate}px {lost} + {lost_low}")
        print(f"  t={t}: confident + 0.6-0.75 faces lost: " + ", ".join(cells))
    if args.save:
        np.savez(
            args.save,
            **{k.replace(" ", "_"): v for k, v in wider.items()},
            confident_sizes=small,
            low_sizes=np.concatenate(low_sizes),
            **{f"other {k}": v for k, v in others.items()},
        )


if __name__ == "__main__":
    main()
