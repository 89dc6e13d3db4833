"""Named landmark sets (Face++ 106, Azure 27) from the mesh: names, sides, positions on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.pipeline import points as basic
from workers.pipeline.landmark_sets import AZURE27, FACEPP106

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "misc"


def test_names_unique_and_known() -> None:
    for table, size in ((AZURE27, 27), (FACEPP106, 82)):
        names = [n for n, _ in table]
        assert len(names) == len(set(names)) == size
    # The four names the Face++ reference spells out that we produce.
    assert {"contour_chin", "right_eye_pupil", "mouth_upper_lip_bottom"} <= {n for n, _ in FACEPP106}


@requires_shared_data
@pytest.mark.models
def test_points_on_real_faces() -> None:
    from facequeue.settings import get_settings
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "intra_op_threads": 1, "embedding_profile": "fast"}
    )
    pipeline = get_pipeline(settings)
    for path in (
        "face_recognition_ageitgey/examples/obama.jpg",
        "face_recognition_ageitgey/examples/biden.jpg",
    ):
        image = np.asarray(Image.open(DATA / path).convert("RGB"))
        sets = {
            name: {
                p.name: p for p in pipeline.analyse(image, {"propoints"}, {"landmark_set": name})[0].points
            }
            for name in ("betaface", "facepp106", "azure27")
        }
        face = pipeline.analyse(image, {"propoints"})[0]
        x1, y1, x2, y2 = face.box
        w = x2 - x1
        for name, table in (("facepp106", FACEPP106), ("azure27", AZURE27)):
            pts = sets[name]
            assert [pts[n].type for n, _ in table] == list(range(len(table)))
            for n, _ in table:  # inside the detector box, with a margin for the chin/jaw
                assert (
                    x1 - 0.1 * w <= pts[n].x <= x2 + 0.1 * w and y1 - 0.1 * w <= pts[n].y <= y2 + 0.2 * w
                ), n
        # Sides: every set's "left" eye is Betaface's "left" eye.
        assert basic.BETAFACE_LEFT_IS_IMAGE_LEFT
        beta_left = sets["betaface"]["eye left iris"]
        assert sets["azure27"]["pupilLeft"].x == pytest.approx(beta_left.x)
        assert sets["facepp106"]["left_eye_pupil"].x == pytest.approx(beta_left.x)
        assert sets["azure27"]["pupilLeft"].x < sets["azure27"]["pupilRight"].x  # frontal photos
        assert (
            sets["facepp106"]["contour_left1"].x
            < sets["facepp106"]["contour_chin"].x
            < sets["facepp106"]["contour_right1"].x
        )
        assert sets["azure27"]["mouthLeft"].x < sets["azure27"]["mouthRight"].x
        assert sets["facepp106"]["left_eye_left_corner"].x < sets["facepp106"]["left_eye_right_corner"].x
