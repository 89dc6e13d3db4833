"""Added cost per face of dense landmarks and attribute tags, at 1 and 2 onnxruntime threads.

One group photo (insightface t1.jpg, 6 faces), all faces in one batch per network as the pipeline runs
them. Stages: mesh (crop warp + network + mapping back), iris (eye crops + network), emotion (fer chips +
network), tags (pose, eye/mouth measures, blur/exposure/noise, emotion chips cut but the network not run), colours (best face),
points (Betaface naming). Prints milliseconds per face, best of --repeat runs.

    .venv/bin/python benchmarks/attributes.py --repeat 10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from facequeue.settings import get_settings
from workers.models.emotion import EmotionClassifier, crop_chip
from workers.models.face_mesh import FaceMesh, face_rois, points_to_image, warp_crops
from workers.models.fetch import model_path
from workers.models.iris import EYE_MIRROR, IrisLandmarks, eye_rois
from workers.models.runtime import create_session
from workers.models.yunet import YuNet
from workers.pipeline import attributes as A
from workers.pipeline.landmarks import FACE_ROI_SCALE, DenseLandmarks, betaface_points

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "misc" / "insightface_samples" / "python-package_images" / "t1.jpg"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(image: np.ndarray, threads: int, repeat: int) -> None:
    grey = np.asarray(Image.fromarray(image).convert("L"))
    settings = get_settings().model_copy(update={"intra_op_threads": threads})

    def factory(path: Path) -> object:
        return create_session(path, settings)

    det = YuNet(create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)).detect(
        image
    )
    n = len(det)
    mesh_model = FaceMesh.from_file(model_path("face_landmark", settings), factory)
    iris_model = IrisLandmarks.from_file(model_path("iris_landmark", settings), factory)
    emotion = EmotionClassifier.from_file(model_path("emotion", settings), factory)
    rois = face_rois(det.boxes, det.landmarks[:, :2], scale=FACE_ROI_SCALE)
    state: dict[str, np.ndarray] = {}

    def mesh() -> None:
        landmarks, score = mesh_model.predict(warp_crops(image, rois, 192))
        state["mesh"], state["score"] = points_to_image(landmarks, rois, 192), score

    def iris() -> None:
        eyes = eye_rois(state["mesh"]).reshape(n * 2, 4)
        contour, irises = iris_model.predict(warp_crops(image, eyes, 64), np.tile(EYE_MIRROR, n))
        state["contour"] = points_to_image(contour, eyes, 64).reshape(n, 2, -1, 3)
        state["iris"] = points_to_image(irises, eyes, 64).reshape(n, 2, -1, 3)

    def emo() -> None:
        chips = np.stack([crop_chip(grey, (b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in det.boxes])
        emotion.predict(chips)

    mesh_s, iris_s, emo_s = (
        best_of(repeat, mesh),
        best_of(repeat, iris),
        best_of(repeat, emo),
    )
    dense = DenseLandmarks(state["mesh"], state["contour"], state["iris"], state["score"], rois)
    # face_tags runs the emotion model too: give it the probabilities already computed, to time the rest.
    probs = emotion.predict(
        np.stack([crop_chip(grey, (b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in det.boxes])
    )
    cached = SimpleNamespace(predict=lambda chips: probs)
    tags_s = best_of(repeat, lambda: A.face_tags(image, det.boxes, dense, cached))  # type: ignore[arg-type]
    colour_s = best_of(repeat, lambda: A.colour_tags(image, dense, 0))
    points_s = best_of(repeat, lambda: [betaface_points(dense, i) for i in range(n)])
    total = mesh_s + iris_s + emo_s + tags_s + points_s
    print(
        f"threads {threads}, {n} faces, ms per face: mesh {1000 * mesh_s / n:.2f}, iris (2 eyes) "
        f"{1000 * iris_s / n:.2f}, emotion {1000 * emo_s / n:.2f}, tags {1000 * tags_s / n:.2f}, "
        f"points {1000 * points_s / n:.2f}; total {1000 * total / n:.2f}; colours (best face only) "
        f"{1000 * colour_s:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    image = np.asarray(Image.open(PHOTO).convert("RGB"))
    for threads in (1, 2):
        bench(image, threads, args.repeat)


if __name__ == "__main__":
    main()
