"""Named landmark sets (Face++ 106, Azure 27) from the mesh: names, sides, positions on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.pipeline import points as basic
from workers.pipeline.landmark_sets import AZURE27, FACEPP83, FACEPP106

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "misc"


def test_names_unique_and_known() -> None:
    for table, size in ((AZURE27, 27), (FACEPP106, 106), (FACEPP83, 83)):
        names = [n for n, _ in table]
        assert len(names) == len(set(names)) == size
    # The four names the Face++ reference spells out that we produce.
    assert {"contour_chin", "right_eye_pupil", "mouth_upper_lip_bottom"} <= {n for n, _ in FACEPP106}
    assert "mouth_upper_lip_left_contour2" in {n for n, _ in FACEPP83}  # the reference's 83-point sample


def _side(name: str) -> int:
    """-1 for a point named on the image's left, +1 right, 0 on the midline."""
    if "left" in name:
        return -1
    if "right" in name:
        return 1
    return 0


@pytest.mark.models
@pytest.mark.parametrize("photo", ["astronaut", "hopper"])
def test_facepp_points_on_anatomy_of_free_photos(photo: str) -> None:
    """Every Face++ 83/106 point lands on its part of a real face: regions measured in a frame of the
    eye centres and mouth corners (x in eye distances from the midline, y 0 at the eyes, 1 at the mouth)."""
    from facequeue.settings import get_settings
    from tests import photos
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "intra_op_threads": 1, "embedding_profile": "fast"}
    )
    image = getattr(photos, photo)()
    pipeline = get_pipeline(settings)
    for set_name, table in (("facepp106", FACEPP106), ("facepp83", FACEPP83)):
        face = pipeline.analyse(image, {"propoints"}, {"landmark_set": set_name})[0]
        names = {n for n, _ in table}
        pts = {p.name: np.array([p.x, p.y]) for p in face.points if p.name in names}
        assert [n for n, _ in table] == [p.name for p in face.points if p.name in names]
        e0, e1 = pts["left_eye_center"], pts["right_eye_center"]
        mouth = (pts["mouth_left_corner"] + pts["mouth_right_corner"]) / 2
        centre, ux = (e0 + e1) / 2, e1 - e0
        ipd = float(np.linalg.norm(ux))
        ux /= ipd
        uy = np.array([-ux[1], ux[0]])
        height = float(np.dot(mouth - centre, uy))

        rel = {n: p - centre for n, p in pts.items()}
        norm = {n: (float(np.dot(d, ux) / ipd), float(np.dot(d, uy) / height)) for n, d in rel.items()}

        for name in pts:
            x, y = norm[name]
            side = _side(name.replace("eyebrow_left_corner", "").replace("eyebrow_right_corner", ""))
            if name.startswith(("left_", "right_")):
                side = -1 if name.startswith("left_") else 1
            # Left/right on the correct side of the midline of its part (a turned head's nose and mouth
            # sit off the eyes' midline); midline points within 0.08 of the eyes' midline.
            part = {"nose": "nose_tip", "mouth": "mouth_upper_lip_top", "contour": "contour_chin"}
            mid = norm[part[name.split("_")[0]]][0] if name.split("_")[0] in part else 0.0
            assert ((x - mid) * side > 0.01) if side else abs(x) < 0.08, (set_name, name, x, mid)
            if name.startswith("nose"):  # between the eyes and the mouth, inside the nose's width
                top = name.startswith("nose_bridge") or name.endswith(
                    ("contour1", "left1", "right1")
                )  # beside the eyes
                lo = -0.15 if top else 0.1
                assert lo <= y <= 0.95 and abs(x) < 0.4, (set_name, name, x, y)
            elif name.startswith("mouth"):  # on the lips: around the mouth line, within its corners
                assert 0.75 <= y <= 1.5 and abs(x) <= 0.75, (set_name, name, x, y)
            elif "eyebrow" in name:  # above the eyes
                assert -0.7 <= y <= -0.1 and 0.1 <= abs(x) <= 1.1, (set_name, name, x, y)
            elif "eye" in name:  # around the eye centre
                assert abs(y) <= 0.25 and 0.2 <= abs(x) <= 0.85, (set_name, name, x, y)
            elif name.startswith("contour"):  # the face outline: outside the eyes/mouth, down to the chin
                assert -0.4 <= y <= 2.4, (set_name, name, y)
                if name != "contour_chin":
                    assert abs(x) >= 0.35 or y >= 1.4, (set_name, name, x, y)
        # Contours run down from eye level to the chin; the chin is the lowest point.
        k = 16 if set_name == "facepp106" else 9
        for side in ("left", "right"):
            ys = [norm[f"contour_{side}{j}"][1] for j in range(1, k + 1)]
            assert ys == sorted(ys), (set_name, side)
        assert norm["contour_chin"][1] == max(norm[n][1] for n in pts)
        # Nose side order (106): bridge side, down, out to the ala, under it, in to the columella.
        if set_name == "facepp106":
            for s in ("left", "right"):
                xs = [abs(norm[f"nose_{s}_contour{j}"][0]) for j in range(1, 6)]
                ys = [norm[f"nose_{s}_contour{j}"][1] for j in range(1, 6)]
                assert ys[0] < ys[1] < ys[2] < ys[4] and xs[2] == max(xs) and xs[4] < xs[3], (s, xs, ys)
        # Lips: upper outer line above the inner line above the lower outer line.
        assert norm["mouth_upper_lip_top"][1] < norm["mouth_upper_lip_bottom"][1]
        assert norm["mouth_lower_lip_top"][1] < norm["mouth_lower_lip_bottom"][1]
        assert norm["mouth_upper_lip_left_contour1"][1] < norm["mouth_lower_lip_left_contour3"][1]


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


@pytest.mark.models
def test_azure27_anatomy_on_free_photos() -> None:
    """Each of Azure's 27 points on its part of the face (astronaut, Hopper: no ../shared needed).
    Sides as Azure's reference example: "Left" is the image's left."""
    from facequeue.settings import get_settings
    from tests.photos import astronaut, hopper
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "intra_op_threads": 1, "embedding_profile": "fast"}
    )
    pipeline = get_pipeline(settings)
    for photo in (astronaut(), hopper()):
        (face,) = pipeline.analyse(photo, {"propoints"}, {"landmark_set": "azure27"})
        p = {pt.name: pt for pt in face.points}
        assert [n for n, _ in AZURE27] == [n for n in p if n in dict(AZURE27)]
        x1, y1, x2, y2 = face.box
        m = 0.05 * (x2 - x1)  # the detector box cuts the eyebrows' outer ends on some faces
        for name, _ in AZURE27:
            assert x1 - m <= p[name].x <= x2 + m and y1 - m <= p[name].y <= y2 + m, name
        x = {n: p[n].x for n in p}
        y = {n: p[n].y for n in p}
        for side in ("Left", "Right"):
            # the pupil inside its eye's corners and lids; eyebrows above the eye
            assert min(x[f"eye{side}Outer"], x[f"eye{side}Inner"]) < x[f"pupil{side}"]
            assert x[f"pupil{side}"] < max(x[f"eye{side}Outer"], x[f"eye{side}Inner"])
            assert y[f"eye{side}Top"] < y[f"pupil{side}"] < y[f"eye{side}Bottom"]
            assert max(y[f"eyebrow{side}Outer"], y[f"eyebrow{side}Inner"]) < y[f"eye{side}Top"]
            # nose: root between the eyes, alar top above the alar out-tip, both beside the tip
            assert y[f"pupil{side}"] < y[f"noseRoot{side}"] < y[f"nose{side}AlarTop"]
            assert y[f"nose{side}AlarTop"] < y[f"nose{side}AlarOutTip"] < y["upperLipTop"]
        # left to right across the face
        order = [
            "eyeLeftOuter",
            "eyeLeftInner",
            "noseRootLeft",
            "noseRootRight",
            "eyeRightInner",
            "eyeRightOuter",
        ]
        assert [x[n] for n in order] == sorted(x[n] for n in order)
        order = ["eyebrowLeftOuter", "eyebrowLeftInner", "eyebrowRightInner", "eyebrowRightOuter"]
        assert [x[n] for n in order] == sorted(x[n] for n in order)
        order = [
            "noseLeftAlarOutTip",
            "noseLeftAlarTop",
            "noseTip",
            "noseRightAlarTop",
            "noseRightAlarOutTip",
        ]
        assert [x[n] for n in order] == sorted(x[n] for n in order)
        assert x["mouthLeft"] < x["upperLipTop"] < x["mouthRight"]
        assert x["mouthLeft"] < x["underLipBottom"] < x["mouthRight"]
        # top to bottom down the midline
        order = ["noseTip", "upperLipTop", "upperLipBottom", "underLipTop", "underLipBottom"]
        assert [y[n] for n in order] == sorted(y[n] for n in order)
        assert y["pupilLeft"] < y["noseTip"] < min(y["mouthLeft"], y["mouthRight"]) < y["underLipBottom"]
