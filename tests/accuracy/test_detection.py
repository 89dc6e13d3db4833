"""Face detection on the WIDER FACE train subset: YuNet (as the pipeline runs it) against dlib's HOG, and
the pipeline's own detection (adaptive second pass, second look at uncertain detections) against plain
one-pass YuNet.

AP (all-point) and recall at IoU 0.5 over faces of at least 32 px; smaller or invalid GT faces are
ignored together with the detections that match them. dlib runs as face_recognition does by default
(get_frontal_face_detector, upsample 1); its scores are the detector's SVM margins.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from facequeue.settings import Settings, get_settings
from tests.accuracy.common import (
    WIDER_BANDS,
    GroundTruth,
    average_precision,
    false_detections,
    iou,
    non_face_photos,
    rgb,
    wider_ground_truth,
)
from tests.photos import (
    ANIMAL_FACES,
    animal_photos,
    black_cat,
    placed_faces,
    puppy,
    quokka,
    requires_animal_photos,
    requires_shared_data,
)
from workers.models.fetch import model_path
from workers.models.runtime import create_session
from workers.models.yunet import Detections, YuNet
from workers.pipeline.detect import FaceDetector


@pytest.fixture(scope="module")
def truths() -> list[GroundTruth]:
    gt = wider_ground_truth()
    assert len(gt) == 400 and sum(int((~g.ignore).sum()) for g in gt) > 500
    return gt


def yunet_detections(
    truths: list[GroundTruth], max_side: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    # Low threshold for the AP curve; the pipeline's default cut (0.6) is a point on it.
    detector = YuNet(session, score_threshold=0.3, max_side=max_side)
    out, start = [], time.perf_counter()
    for gt in truths:
        found = detector.detect(rgb(gt.path))
        out.append((found.boxes, found.scores))
    return out, time.perf_counter() - start


@requires_shared_data
@pytest.mark.models
@pytest.mark.peers
def test_yunet_beats_dlib_hog(truths: list[GroundTruth]) -> None:
    dlib = pytest.importorskip("dlib")
    ours, our_time = yunet_detections(truths, Settings().detection_max_side)
    hog = dlib.get_frontal_face_detector()
    theirs, start = [], time.perf_counter()
    for gt in truths:
        rects, scores, _ = hog.run(rgb(gt.path), 1, -0.5)
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], float).reshape(
            -1, 4
        )
        theirs.append((boxes, np.asarray(scores, float)))
    hog_time = time.perf_counter() - start
    ap_ours, recall_ours = average_precision(truths, ours)
    ap_hog, recall_hog = average_precision(truths, theirs)
    faces = sum(int((~g.ignore).sum()) for g in truths)
    print(
        f"\nWIDER subset, {len(truths)} images, {faces} faces >= 32 px, IoU 0.5\n"
        f"  YuNet (long side {Settings().detection_max_side}): AP {ap_ours:.3f}  recall {recall_ours:.3f}  {our_time:.1f} s\n"
        f"  dlib HOG (upsample 1):      AP {ap_hog:.3f}  recall {recall_hog:.3f}  {hog_time:.1f} s"
    )
    assert ap_ours >= ap_hog + 0.15
    assert recall_ours >= recall_hog + 0.15


def test_average_precision_counts_and_ignores() -> None:
    """The AP helper itself: a perfect detector scores 1, a detection on an ignored face costs nothing."""
    gt = GroundTruth(
        path=Path("unused.jpg"),  # the AP helper never opens it
        boxes=np.array([[0, 0, 50, 50], [100, 100, 150, 150], [200, 200, 210, 210]], float),
        ignore=np.array([False, False, True]),
    )
    perfect = (gt.boxes[:2], np.array([0.9, 0.8]))
    assert average_precision([gt], [perfect]) == (1.0, 1.0)
    with_ignored = (gt.boxes, np.array([0.9, 0.8, 0.95]))
    assert average_precision([gt], [with_ignored]) == (1.0, 1.0)
    false_first = (np.vstack([[300, 300, 350, 350], gt.boxes[:1]]), np.array([0.9, 0.8]))
    ap, recall = average_precision([gt], [false_first])
    assert recall == 0.5 and ap == pytest.approx(0.25)


def _detector(mode: str, second_look: bool, sure_floor: float = 0.0) -> FaceDetector:
    """The pipeline's detector at the curve threshold 0.3 (the 0.6 answers are the subset >= 0.6: the
    passes, the merge and the second look do not depend on the reporting threshold)."""
    from workers.models.face_mesh import FaceMesh
    from workers.models.onet import ONet

    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
    session = create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)
    return FaceDetector(
        session,
        threshold=0.3,
        mesh_loader=(lambda: FaceMesh.from_file(model_path("face_landmark", settings)))
        if second_look
        else None,
        sure_min_face_score=sure_floor,
        mode=mode,  # type: ignore[arg-type]
        # Both checks, as the pipeline runs them (FACEQUEUE_NONFACE_ONET_MIN_PROB=0 measures the mesh alone).
        onet_loader=(lambda: ONet.from_file(model_path("mtcnn_onet", settings))) if second_look else None,
        onet_min_prob=settings.nonface_onet_min_prob,
        onet_min_side=settings.nonface_onet_min_side,
    )


def _run(images: list[np.ndarray], mode: str, second_look: bool) -> list[Detections]:
    detector = _detector(mode, second_look)
    return [detector.detect(im) for im in images]


def _at(found: list[Detections], threshold: float = 0.6) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(f.boxes[f.scores >= threshold], f.scores[f.scores >= threshold]) for f in found]


@pytest.fixture(scope="module")
def pipeline_detections(truths: list[GroundTruth]) -> dict[str, list[Detections]]:
    images = [rgb(gt.path) for gt in truths]
    return {
        "before": _run(images, "fast", second_look=False),
        "default": _run(images, "auto", second_look=True),
    }


@requires_shared_data
@requires_animal_photos
@pytest.mark.models
def test_second_look_cuts_false_detections_and_keeps_recall(
    truths: list[GroundTruth], pipeline_detections: dict[str, list[Detections]]
) -> None:
    figures = {}
    for name, found in pipeline_detections.items():
        at = _at(found)
        figures[name] = {
            "false/image": false_detections(truths, [b for b, _ in at]) / len(truths),
            "recall>=32": average_precision(truths, at)[1],
            "recall>=20": average_precision(wider_ground_truth(20), at)[1],
        }
    others = list(non_face_photos().values()) + [puppy(), black_cat(), quokka()]
    plain, looked = _run(others, "fast", False), _run(others, "auto", True)
    figures["before"]["non-face detections"] = sum(len(b) for b, _ in _at(plain))
    figures["default"]["non-face detections"] = sum(len(b) for b, _ in _at(looked))
    print(f"\nthreshold 0.6, {len(truths)} WIDER images, {len(others)} non-face photos: {figures}")
    before, after = figures["before"], figures["default"]
    # Measured: 0.245 -> 0.123 false detections per image (0.138 with the mesh check alone); recall >= 32 px
    # 0.907 -> 0.898 (0.899 mesh alone); non-face photos: 2 detections -> 1 (scikit-image's
    # stereo_motorcycle stays; the puppy, which the mesh alone kept, is dropped by the O-Net check).
    assert after["false/image"] <= 0.6 * before["false/image"]
    assert after["recall>=32"] >= before["recall>=32"] - 0.015
    assert after["recall>=20"] >= before["recall>=20"] - 0.005
    assert after["non-face detections"] <= before["non-face detections"] - 1


@requires_shared_data
@pytest.mark.models
def test_adaptive_detection_finds_small_faces(pipeline_detections: dict[str, list[Detections]]) -> None:
    bands = {name: wider_ground_truth(side) for name, side in WIDER_BANDS.items()}
    ap = {
        name: {
            band: average_precision(gt, [(f.boxes, f.scores) for f in found])[0] for band, gt in bands.items()
        }
        for name, found in pipeline_detections.items()
    }
    print(f"\nAP by size band (easy >= 50, medium >= 30, hard >= 10 px): {ap}")
    # Without the second look the adaptive pass lifts hard AP 0.79 -> 0.86; the look gives part of it back
    # (the mesh misses some small real faces), so the default must at least hold hard and easy AP.
    assert ap["default"]["hard"] >= ap["before"]["hard"] - 0.02
    assert ap["default"]["easy"] >= ap["before"]["easy"] - 0.03
    auto_only = _run([rgb(gt.path) for gt in bands["hard"]], "auto", second_look=False)
    assert (
        average_precision(bands["hard"], [(f.boxes, f.scores) for f in auto_only])[0]
        >= ap["before"]["hard"] + 0.04
    )


@requires_shared_data
@requires_animal_photos
@pytest.mark.models
def test_confident_floor_loses_few_real_faces(
    truths: list[GroundTruth], pipeline_detections: dict[str, list[Detections]]
) -> None:
    """The opt-in floor for confident detections (FACEQUEUE_NONFACE_SURE_MIN_FACE_SCORE=5e-5) against the
    confident real faces of WIDER and hand-placed boxes on the animal faces."""
    detector = _detector("auto", second_look=True)
    real = []
    for gt, det in zip(truths, pipeline_detections["default"], strict=True):
        sure = det.scores >= 0.75
        if sure.any():
            det = Detections(det.boxes[sure], det.scores[sure], det.landmarks[sure])
            scores = detector.face_scores(rgb(gt.path), det)
            real.append(scores[iou(det.boxes, gt.boxes).max(1) >= 0.5])
    faces = np.concatenate(real)
    animals = {
        n: detector.face_scores(im, placed_faces(*ANIMAL_FACES[n])) for n, im in animal_photos().items()
    }
    lost = float((faces < 5e-5).mean())
    caught = {n: int((s < 5e-5).sum()) for n, s in animals.items()}
    print(
        f"\n{len(faces)} confident WIDER faces, {lost:.2%} below 5e-5; placed animal boxes caught (of 27): {caught}"
    )
    # Measured: 5 of 1,547 faces (0.32 %); black cat 7, quokka 8, Chelsea 0, puppy 0 of 27.
    assert len(faces) > 1400 and lost <= 0.005
    assert caught["black_cat"] + caught["quokka"] >= 8
    # The mesh alone takes the puppy for a human face; the O-Net check drops it (tests/unit/test_detect.py).
    assert caught["puppy"] == 0


@requires_shared_data
@pytest.mark.models
def test_human_face_check_loses_few_real_faces(
    truths: list[GroundTruth], pipeline_detections: dict[str, list[Detections]]
) -> None:
    """The O-Net check (boxes >= nonface_onet_min_side px, mean face probability >= nonface_onet_min_prob)
    against the WIDER detections of one plain YuNet pass that match an annotated face (IoU >= 0.5)."""
    detector = _detector("auto", second_look=True)
    counts = {"confident": [0, 0, 0], "0.6-0.75": [0, 0, 0]}  # faces, of them checked, of them lost
    for gt, det in zip(truths, pipeline_detections["before"], strict=True):
        keep = det.scores >= 0.6
        if not keep.any() or not len(gt.boxes):
            continue
        keep &= iou(det.boxes, gt.boxes).max(1) >= 0.5
        short = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        checked = keep & (short >= detector.onet_min_side)
        scores = np.ones(len(det))
        if checked.any():
            subset = Detections(det.boxes[checked], det.scores[checked], det.landmarks[checked])
            scores[checked] = detector.human_scores([rgb(gt.path)], [subset])[0]
        for name, band in (("confident", det.scores >= 0.75), ("0.6-0.75", det.scores < 0.75)):
            counts[name][0] += int((keep & band).sum())
            counts[name][1] += int((checked & band).sum())
            counts[name][2] += int((checked & band & (scores < detector.onet_min_prob)).sum())
    print(f"\nO-Net check on matched WIDER detections (faces, checked, lost): {counts}")
    # Measured (one fast pass): confident 1,355 faces, 432 checked, 1 lost; 0.6-0.75: 134, 5, 0.
    assert counts["confident"][0] > 1300 and counts["confident"][1] > 400
    assert counts["confident"][2] <= 0.005 * counts["confident"][0]
    assert counts["0.6-0.75"][2] <= 0.01 * counts["0.6-0.75"][0]
