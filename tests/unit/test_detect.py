"""The pipeline's detector (workers/pipeline/detect.py) on the free photos: modes, the adaptive second pass
and the second look (the second look's figures on real data: tests/accuracy/test_detection.py)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import get_settings
from tests.photos import astronaut, cat, group, hopper
from workers.models.face_mesh import FaceMesh
from workers.models.fetch import model_path
from workers.models.runtime import create_session
from workers.models.yunet import YuNet
from workers.pipeline.detect import FaceDetector

pytestmark = pytest.mark.models


@cache
def _session():  # type: ignore[no-untyped-def]
    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
    return create_session(YuNet.dynamic_model_bytes(model_path("yunet", settings)), settings)


def _mesh() -> FaceMesh:
    return FaceMesh.from_file(model_path("face_landmark"))


def crowd() -> np.ndarray:
    """A 2560 x 1440 canvas with 12 portraits at a quarter size: faces 22 and 45 px wide (5 and 11 px at the
    fast pass's scale)."""
    canvas = np.full((1440, 2560, 3), 120, np.uint8)
    for k in range(12):
        source = Image.fromarray(astronaut() if k % 2 else hopper())
        small = np.asarray(source.resize((source.width // 4, source.height // 4), Image.LANCZOS))
        y, x = 200 + (k // 6) * 600, 100 + (k % 6) * 400
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def test_portraits_cost_one_pass_and_a_cat_is_no_face() -> None:
    detector = FaceDetector(_session(), mesh_loader=_mesh)
    assert len(detector.detect(group())) == 2 and detector.second_passes == 0
    assert len(detector.detect(cat())) == 0
    assert all(len(detector.detect(cat(), mode)) == 0 for mode in ("fast", "accurate"))


def test_auto_finds_small_faces_fast_misses() -> None:
    detector = FaceDetector(_session(), mesh_loader=_mesh)
    image = crowd()
    fast, auto = detector.detect(image, "fast"), detector.detect(image, "auto")
    # Measured: fast 4 (the 45-px faces it scores lowest), auto all 12 (the 22-px faces too).
    assert len(fast) <= 6 and len(auto) >= 11 and detector.second_passes == 1
    accurate = detector.detect(image, "accurate")
    assert len(accurate) >= len(auto)
    with pytest.raises(ValueError, match="detection_mode"):
        detector.detect(image, "bogus")  # type: ignore[arg-type]


class _NoFace:
    """A second-look network that never sees a face (unit-test fake)."""

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(crops), 468, 3), np.float32), np.zeros(len(crops), np.float32)


def test_second_look_drops_only_uncertain_detections() -> None:
    image = group()
    plain = FaceDetector(_session(), threshold=0.3).detect(image)
    sure = int((plain.scores >= 0.75).sum())
    looked = FaceDetector(_session(), threshold=0.3, mesh_loader=_NoFace).detect(image)  # type: ignore[arg-type]
    assert len(looked) == sure and (looked.scores >= 0.75).all()
    # The real mesh keeps both real faces and says so with a high face score.
    detector = FaceDetector(_session(), mesh_loader=_mesh)
    found = detector.detect(image)
    assert len(found) == 2 and (detector.face_scores(image, found) > 0.5).all()
