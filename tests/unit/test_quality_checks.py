"""quality_checks: liveness-API error codes on synthetic faces and real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.pipeline.quality_checks import QualityThresholds, quality_checks
from workers.pipeline.types import FaceAnalysis, Point, Tag

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "misc"


def face(box: tuple[float, float, float, float], tags: tuple[Tag, ...] = (), points=()) -> FaceAnalysis:
    x1, y1, x2, y2 = box
    w = x2 - x1
    eyes = [[x1 + 0.3 * w, y1 + 0.4 * w], [x1 + 0.7 * w, y1 + 0.4 * w]]
    lm = np.array(eyes + [[x1 + 0.5 * w, y1 + 0.6 * w]] * 3, np.float32)
    return FaceAnalysis(np.array(box, np.float32), 0.9, lm, tags=list(tags), points=list(points))


def test_synthetic_codes() -> None:
    shape = (1000, 1000, 3)
    good = face((400, 400, 600, 600), (Tag("yaw", "5.0"), Tag("pitch", "12.0")))
    assert quality_checks(shape, [good]) == []
    assert quality_checks(shape, []) == ["FACE_NOT_FOUND"]
    assert quality_checks(shape, [good, face((100, 100, 300, 300))]) == ["TOO_MANY_FACES"]
    assert quality_checks(shape, [face((500, 500, 560, 560))]) == ["FACE_TOO_SMALL"]
    assert quality_checks(shape, [face((50, 50, 950, 950))]) == ["FACE_TOO_CLOSE"]
    assert quality_checks(shape, [face((5, 400, 205, 600))]) == ["FACE_CLOSE_TO_BORDER"]
    assert quality_checks(shape, [face((-20, 400, 180, 600))]) == ["FACE_CROPPED"]
    chin_out = face((400, 700, 600, 900), points=(Point(500, 1010, 458752, "chin bottom"),))
    assert quality_checks(shape, [chin_out]) == ["FACE_CROPPED"]
    assert quality_checks(shape, [face((400, 400, 600, 600), (Tag("yaw", "-45.0"),))]) == [
        "FACE_ANGLE_TOO_LARGE"
    ]
    assert quality_checks(shape, [face((400, 400, 600, 600), (Tag("pitch", "50.0"),))]) == [
        "FACE_ANGLE_TOO_LARGE"
    ]
    # Thresholds come from the caller.
    assert quality_checks(shape, [good, good], QualityThresholds(max_faces=2)) == []


@requires_shared_data
@pytest.mark.models
def test_real_photos() -> None:
    from facequeue.settings import get_settings
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "intra_op_threads": 1, "embedding_profile": "fast"}
    )
    pipeline = get_pipeline(settings)
    group = np.asarray(Image.open(DATA / "insightface_samples" / "python-package_images" / "t1.jpg"))
    codes = quality_checks(group.shape, pipeline.analyse(group, {"classifiers"}))
    assert "TOO_MANY_FACES" in codes and "FACE_TOO_SMALL" not in codes
    portrait = np.asarray(
        Image.open(DATA / "face_recognition_ageitgey" / "examples" / "obama.jpg").convert("RGB")
    )
    assert quality_checks(portrait.shape, pipeline.analyse(portrait, {"classifiers"})) == []
    # The same portrait shrunk to a thumbnail inside a large canvas: a tiny face.
    small = np.asarray(Image.fromarray(portrait).resize((portrait.shape[1] // 8, portrait.shape[0] // 8)))
    canvas = np.full((1200, 1600, 3), 128, np.uint8)
    canvas[500 : 500 + small.shape[0], 700 : 700 + small.shape[1]] = small
    assert "FACE_TOO_SMALL" in quality_checks(canvas.shape, pipeline.analyse(canvas, {"classifiers"}))
    # The portrait cut through the face: its left part removed so the face touches the image edge.
    faces = pipeline.analyse(portrait, ())
    x_mid = int((faces[0].box[0] + faces[0].box[2]) / 2)
    cut = np.ascontiguousarray(portrait[:, x_mid - int(0.4 * (faces[0].box[2] - faces[0].box[0])) :])
    cut_codes = quality_checks(cut.shape, pipeline.analyse(cut, {"propoints"}))
    assert {"FACE_CROPPED", "FACE_CLOSE_TO_BORDER"} & set(cut_codes), cut_codes
