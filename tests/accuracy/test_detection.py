"""Face detection on the WIDER FACE train subset: YuNet (as the pipeline runs it) against dlib's HOG.

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
from tests.accuracy.common import GroundTruth, average_precision, rgb, wider_ground_truth
from workers.models.fetch import model_path
from workers.models.runtime import create_session
from workers.models.yunet import YuNet


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
