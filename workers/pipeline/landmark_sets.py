"""Other vendors' named landmark sets, built from the same mesh + iris points as Betaface's pro points.

`landmark_set` upload option: "betaface" (default, `landmarks.betaface_points`), "facepp106", "facepp83", "azure27".
`Point.type` of a non-Betaface point is its index in that set's order (the tables below).

Sides. Face++ and Azure both name sides from the image ("left_eye" is the subject's right eye: Azure's
reference response has pupilLeft at x=412.7 < pupilRight at x=446.8; Face++'s landmark page says so in
words). That is the same reading `workers.pipeline.points` takes for Betaface (BETAFACE_LEFT_IS_IMAGE_LEFT),
so "left" here is always the side on the image's left; a test checks the three sets agree on a face.

Sources of points: the mesh (MediaPipe 468 vertices, numbered as in its canonical model), the iris
network's eye contour (index 0 = outer corner, 8 = inner, 4 = bottom, 12 = top, 2/6 bottom outer/inner,
10/14 top outer/inner) and iris centres. Eye index 0 = subject's right eye = image left.

Azure 27 (names exactly as in reference/azure-face-api-v1.txt): all 27 have a mesh counterpart; the
nose-root and alar points are the mesh vertices at the sides of the nasal bridge (122/351), the top of the
ala (131/360: above the tip's level and inside the wing, as in Azure's example) and the outer alar points
(64/294: lateral to and below the alar top). 129/358, used before, lie at the tip's level on the wing's
outer edge, outside and not above 64/294 (measured on the free photos: tests/unit/test_landmark_sets.py).

Face++ 106: the reference (faceplusplus-detect-v3.txt) names only four of the 106 points; the other names
follow Face++'s "Landmarks Illustration (106 Points)" page. Produced: the 33 contour points (contour_chin
and contour_left/right1-16, resampled at equal arc length along the mesh's face oval from vertex 127/356
- roughly eye level - to the chin 152, because the oval has only 11 vertices per side there), 18 eyebrow,
20 eye, 15 nose and 20 lip points: all 106. The nose side and lip contour numbering follows a real Face++
106-point answer (a published one; contour order as Face++ draws it): nose_left_contour1 beside the bridge
just below the eyes, 2 down the side, 3 the outermost alar point, 4 under the ala, 5 beside the columella;
upper lip contour1 = Cupid's-bow peak, 2 = outer line towards the corner, 3 = inner line near the corner,
4 = inner line towards the middle; lower lip contour1 = inner line, 2 = outer line near the corner,
3 = outer line towards the middle. Each was matched to the mesh vertex at the same place on two free
photos (normalised by eye distance and eye-mouth height), mirrored for the right side.

Face++ 83 (`facepp83`, return_landmark=1): 19 contour points (9 per side + chin, resampled like the 106),
8 points per eyebrow (the inner corner is the mean of the brow's upper and lower inner ends), 10 per eye,
10 nose points (contour_left1 beside the bridge, left2 down the side, nose_left the outermost alar point,
contour_left3 under the ala, lower_middle the subnasale, tip) and 18 lip points (the 106 layout without
the inner-corner contour3).
"""

from __future__ import annotations

import numpy as np

from schema.flags import LANDMARK_SETS  # noqa: E402,F401 - the request vocabulary, re-exported
from workers.pipeline.landmarks import DenseLandmarks, betaface_points
from workers.pipeline.types import Point

# Source of a point: ("mesh", vertex), ("eye", eye index, contour index), ("iris", eye index),
# ("eye_centre", eye index) = mean of the 16 eye-contour points.
Source = tuple

AZURE27: tuple[tuple[str, Source], ...] = (
    ("pupilLeft", ("iris", 0)),
    ("pupilRight", ("iris", 1)),
    ("noseTip", ("mesh", 4)),
    ("mouthLeft", ("mesh", 61)),
    ("mouthRight", ("mesh", 291)),
    ("eyebrowLeftOuter", ("mesh", 70)),
    ("eyebrowLeftInner", ("mesh", 107)),
    ("eyeLeftOuter", ("eye", 0, 0)),
    ("eyeLeftTop", ("eye", 0, 12)),
    ("eyeLeftBottom", ("eye", 0, 4)),
    ("eyeLeftInner", ("eye", 0, 8)),
    ("eyebrowRightInner", ("mesh", 336)),
    ("eyebrowRightOuter", ("mesh", 300)),
    ("eyeRightInner", ("eye", 1, 8)),
    ("eyeRightTop", ("eye", 1, 12)),
    ("eyeRightBottom", ("eye", 1, 4)),
    ("eyeRightOuter", ("eye", 1, 0)),
    ("noseRootLeft", ("mesh", 122)),
    ("noseRootRight", ("mesh", 351)),
    ("noseLeftAlarTop", ("mesh", 131)),
    ("noseRightAlarTop", ("mesh", 360)),
    ("noseLeftAlarOutTip", ("mesh", 64)),
    ("noseRightAlarOutTip", ("mesh", 294)),
    ("upperLipTop", ("mesh", 0)),
    ("upperLipBottom", ("mesh", 13)),
    ("underLipTop", ("mesh", 14)),
    ("underLipBottom", ("mesh", 17)),
)

# Mesh face oval from about eye level to the chin, image-left side (subject's right) and image-right side.
OVAL_LEFT = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152)
OVAL_RIGHT = (356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152)
CONTOUR_POINTS = 16  # per side, plus contour_chin (106); the 83-point set has 9

FACEPP106: tuple[tuple[str, Source], ...] = (
    ("contour_chin", ("mesh", 152)),
    *((f"contour_left{k}", ("oval", 0, k, CONTOUR_POINTS)) for k in range(1, CONTOUR_POINTS + 1)),
    *((f"contour_right{k}", ("oval", 1, k, CONTOUR_POINTS)) for k in range(1, CONTOUR_POINTS + 1)),
    # Image-left brow = subject's right brow: upper row 70 63 105 66 107, lower row 46 53 52 65 55.
    ("left_eyebrow_left_corner", ("mesh", 70)),
    ("left_eyebrow_upper_left_quarter", ("mesh", 63)),
    ("left_eyebrow_upper_middle", ("mesh", 105)),
    ("left_eyebrow_upper_right_quarter", ("mesh", 66)),
    ("left_eyebrow_upper_right_corner", ("mesh", 107)),
    ("left_eyebrow_lower_left_quarter", ("mesh", 53)),
    ("left_eyebrow_lower_middle", ("mesh", 52)),
    ("left_eyebrow_lower_right_quarter", ("mesh", 65)),
    ("left_eyebrow_lower_right_corner", ("mesh", 55)),
    # Image-right brow = subject's left brow: upper 336 296 334 293 300, lower 285 295 282 283 276.
    ("right_eyebrow_upper_left_corner", ("mesh", 336)),
    ("right_eyebrow_upper_left_quarter", ("mesh", 296)),
    ("right_eyebrow_upper_middle", ("mesh", 334)),
    ("right_eyebrow_upper_right_quarter", ("mesh", 293)),
    ("right_eyebrow_right_corner", ("mesh", 300)),
    ("right_eyebrow_lower_left_corner", ("mesh", 285)),
    ("right_eyebrow_lower_left_quarter", ("mesh", 295)),
    ("right_eyebrow_lower_middle", ("mesh", 282)),
    ("right_eyebrow_lower_right_quarter", ("mesh", 283)),
    # Image-left eye (eye 0): its image-left end is the outer corner.
    ("left_eye_left_corner", ("eye", 0, 0)),
    ("left_eye_upper_left_quarter", ("eye", 0, 10)),
    ("left_eye_top", ("eye", 0, 12)),
    ("left_eye_upper_right_quarter", ("eye", 0, 14)),
    ("left_eye_right_corner", ("eye", 0, 8)),
    ("left_eye_lower_right_quarter", ("eye", 0, 6)),
    ("left_eye_bottom", ("eye", 0, 4)),
    ("left_eye_lower_left_quarter", ("eye", 0, 2)),
    ("left_eye_pupil", ("iris", 0)),
    ("left_eye_center", ("eye_centre", 0)),
    # Image-right eye (eye 1): its image-left end is the inner corner.
    ("right_eye_left_corner", ("eye", 1, 8)),
    ("right_eye_upper_left_quarter", ("eye", 1, 14)),
    ("right_eye_top", ("eye", 1, 12)),
    ("right_eye_upper_right_quarter", ("eye", 1, 10)),
    ("right_eye_right_corner", ("eye", 1, 0)),
    ("right_eye_lower_right_quarter", ("eye", 1, 2)),
    ("right_eye_bottom", ("eye", 1, 4)),
    ("right_eye_lower_left_quarter", ("eye", 1, 6)),
    ("right_eye_pupil", ("iris", 1)),
    ("right_eye_center", ("eye_centre", 1)),
    # Nose: bridge from between the eyes down (168, 6, 197), tip 4, subnasale 2 as the middle contour.
    ("nose_bridge1", ("mesh", 168)),
    ("nose_bridge2", ("mesh", 6)),
    ("nose_bridge3", ("mesh", 197)),
    ("nose_tip", ("mesh", 4)),
    ("nose_middle_contour", ("mesh", 2)),
    ("nose_left_contour1", ("mesh", 122)),
    ("nose_left_contour2", ("mesh", 220)),
    ("nose_left_contour3", ("mesh", 64)),
    ("nose_left_contour4", ("mesh", 99)),
    ("nose_left_contour5", ("mesh", 141)),
    ("nose_right_contour1", ("mesh", 351)),
    ("nose_right_contour2", ("mesh", 440)),
    ("nose_right_contour3", ("mesh", 294)),
    ("nose_right_contour4", ("mesh", 328)),
    ("nose_right_contour5", ("mesh", 370)),
    # Lips: outer top 0, inner top 13, inner bottom 14, outer bottom 17; corners 61 (image left) / 291.
    ("mouth_upper_lip_top", ("mesh", 0)),
    ("mouth_upper_lip_bottom", ("mesh", 13)),
    ("mouth_lower_lip_top", ("mesh", 14)),
    ("mouth_lower_lip_bottom", ("mesh", 17)),
    ("mouth_left_corner", ("mesh", 61)),
    ("mouth_right_corner", ("mesh", 291)),
    ("mouth_upper_lip_left_contour1", ("mesh", 37)),
    ("mouth_upper_lip_left_contour2", ("mesh", 39)),
    ("mouth_upper_lip_left_contour3", ("mesh", 191)),
    ("mouth_upper_lip_left_contour4", ("mesh", 81)),
    ("mouth_upper_lip_right_contour1", ("mesh", 267)),
    ("mouth_upper_lip_right_contour2", ("mesh", 269)),
    ("mouth_upper_lip_right_contour3", ("mesh", 415)),
    ("mouth_upper_lip_right_contour4", ("mesh", 311)),
    ("mouth_lower_lip_left_contour1", ("mesh", 178)),
    ("mouth_lower_lip_left_contour2", ("mesh", 181)),
    ("mouth_lower_lip_left_contour3", ("mesh", 84)),
    ("mouth_lower_lip_right_contour1", ("mesh", 402)),
    ("mouth_lower_lip_right_contour2", ("mesh", 405)),
    ("mouth_lower_lip_right_contour3", ("mesh", 314)),
)

CONTOUR_POINTS_83 = 9
_SAME_IN_83 = (
    "left_eyebrow_left_corner",
    "left_eyebrow_upper_left_quarter",
    "left_eyebrow_upper_middle",
    "left_eyebrow_upper_right_quarter",
    "left_eyebrow_lower_left_quarter",
    "left_eyebrow_lower_middle",
    "left_eyebrow_lower_right_quarter",
    "right_eyebrow_upper_left_quarter",
    "right_eyebrow_upper_middle",
    "right_eyebrow_upper_right_quarter",
    "right_eyebrow_right_corner",
    "right_eyebrow_lower_left_quarter",
    "right_eyebrow_lower_middle",
    "right_eyebrow_lower_right_quarter",
    *(n for n, _ in FACEPP106 if n.startswith(("left_eye_", "right_eye_"))),
    "nose_tip",
    "mouth_upper_lip_top",
    "mouth_upper_lip_bottom",
    "mouth_lower_lip_top",
    "mouth_lower_lip_bottom",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_upper_lip_left_contour1",
    "mouth_upper_lip_left_contour2",
    "mouth_upper_lip_right_contour1",
    "mouth_upper_lip_right_contour2",
    "mouth_lower_lip_left_contour1",
    "mouth_lower_lip_left_contour2",
    "mouth_lower_lip_left_contour3",
    "mouth_lower_lip_right_contour1",
    "mouth_lower_lip_right_contour2",
    "mouth_lower_lip_right_contour3",
)
_BY_NAME_106 = dict(FACEPP106)
FACEPP83: tuple[tuple[str, Source], ...] = (
    ("contour_chin", ("mesh", 152)),
    *((f"contour_left{k}", ("oval", 0, k, CONTOUR_POINTS_83)) for k in range(1, CONTOUR_POINTS_83 + 1)),
    *((f"contour_right{k}", ("oval", 1, k, CONTOUR_POINTS_83)) for k in range(1, CONTOUR_POINTS_83 + 1)),
    *((name, _BY_NAME_106[name]) for name in _SAME_IN_83),
    ("left_eyebrow_right_corner", ("mean", 107, 55)),
    ("right_eyebrow_left_corner", ("mean", 336, 285)),
    ("nose_contour_left1", ("mesh", 122)),
    ("nose_contour_left2", ("mesh", 220)),
    ("nose_left", ("mesh", 64)),
    ("nose_contour_left3", ("mesh", 99)),
    ("nose_contour_lower_middle", ("mesh", 2)),
    ("nose_contour_right1", ("mesh", 351)),
    ("nose_contour_right2", ("mesh", 440)),
    ("nose_right", ("mesh", 294)),
    ("nose_contour_right3", ("mesh", 328)),
    # 83: one inner-line point per upper-lip side, between the 106's contour3 and contour4.
    ("mouth_upper_lip_left_contour3", ("mesh", 80)),
    ("mouth_upper_lip_right_contour3", ("mesh", 310)),
)

TABLES = {"facepp106": FACEPP106, "facepp83": FACEPP83, "azure27": AZURE27}


def _resample(polyline: np.ndarray, count: int) -> np.ndarray:
    """`count` + 1 points at equal arc length along a polyline (K, 2), both ends included."""
    seg = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], count + 1)
    return np.column_stack([np.interp(t, s, polyline[:, 0]), np.interp(t, s, polyline[:, 1])])


def _xy(dense: DenseLandmarks, i: int, source: Source, mesh: np.ndarray) -> np.ndarray:
    kind = source[0]
    if kind == "mesh":
        return dense.mesh[i, source[1], :2]
    if kind == "mean":
        return mesh[list(source[1:])].mean(0)
    if kind == "eye":
        return dense.eye_contour[i, source[1], source[2], :2]
    if kind == "iris":
        return dense.iris[i, source[1], 0, :2]
    if kind == "eye_centre":
        return dense.eye_contour[i, source[1], :16, :2].mean(0)
    if kind == "oval":
        _, side, k, count = source
        return _resample(mesh[list((OVAL_LEFT, OVAL_RIGHT)[side])], count)[k - 1]
    raise ValueError(f"unknown point source {source!r}")


def named_points(dense: DenseLandmarks, i: int, landmark_set: str = "betaface") -> list[Point]:
    """The dense points of face i in the chosen set (see the module docstring)."""
    if landmark_set == "betaface":
        return betaface_points(dense, i)
    try:
        table = TABLES[landmark_set]
    except KeyError:
        raise ValueError(f"unknown landmark_set {landmark_set!r}; one of {list(LANDMARK_SETS)}") from None
    mesh = np.asarray(dense.mesh[i], np.float64)[:, :2]
    out = []
    for index, (name, source) in enumerate(table):
        x, y = _xy(dense, i, source, mesh)
        out.append(Point(x=round(float(x), 2), y=round(float(y), 2), type=index, name=name))
    return out
