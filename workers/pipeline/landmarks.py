"""Dense landmarks: MediaPipe face mesh + iris on detected faces, mapped to Betaface's named points.

All faces of an image go through the mesh as one batch, and all their eyes through the iris network as
one batch. The mesh crop is cut from the detector box (centre, longer side x FACE_ROI_SCALE) rotated so
the detector's eye line is level. MediaPipe's own rule is 1.5 x its BlazeFace box; YuNet boxes are taller
(they reach the hairline); 1.4 gave the lowest mean error on the 68 hand-made points of 300-W and 300W-LP (see tests/unit/test_landmarks.py).

Point names. Betaface names sides "left"/"right"; which side that is follows
`workers.pipeline.points.BETAFACE_LEFT_IS_IMAGE_LEFT`, so the dense points always agree with the basic
points of the same face. The table below is written in the subject's terms: each paired name lists the
mesh vertex on the subject's left and on the subject's right (MediaPipe's canonical mesh is left/right
symmetric: 263/33 are the outer eye corners, 291/61 the mouth corners, 454/234 the face oval at ear level).
Betaface lists the nose outline as a walk down each side: top (beside the bridge at eye level), top inner
(down the bridge side), top outer (the top of the wing), bottom outer (the wing's outer tip), bottom inner
(the nostril's base), then "nose bottom" on the midline; those are mesh vertices 122, 196, 131, 64, 99 on
the subject's right and their mirror images 351, 419, 360, 294, 328 (Azure's alar top is 131/360 too). "forehead 2" and "forehead 3" lie on the hairline between "forehead middle" (10) and "forehead
1" / "forehead 4" (338 / 109); the mesh has no vertex there, so each is the midpoint of its two
neighbours on that arc.

Eye points come from the iris network's refined eye contour (its points 0-15 are MediaPipe's refinement
of mesh vertices 33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173 and their
mirror images), iris centres from the iris network, everything else from the mesh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from workers.models.face_mesh import FaceMesh, face_rois, points_to_image, warp_crops
from workers.models.iris import EYE_MIRROR, IrisLandmarks, eye_rois
from workers.pipeline import points as basic
from workers.pipeline.types import Point

FACE_ROI_SCALE = 1.4  # detector box (YuNet) -> mesh crop side

# Betaface point type ids (reference/betaface-api.txt), by Betaface's own name (its typos kept).
BETAFACE_TYPES = {
    "basic eye left": 512,
    "basic eye right": 768,
    "basic eye left outer": 1024,
    "basic eye right outer": 1280,
    "basic eye left inner": 1536,
    "basic eye right inner": 1792,
    "basic mouth left": 2048,
    "basic mouth right": 2304,
    "chin ear left": 65536,
    "chin left 1": 131072,
    "chin left 2": 196608,
    "chin left 3": 262144,
    "chin left 4": 327680,
    "chin left 5": 393216,
    "chin bottom": 458752,
    "chin right 5": 524288,
    "chin right 4": 589824,
    "chin right 3": 655360,
    "chin right 2": 720896,
    "chin right 1": 786432,
    "chin ear right": 851968,
    "temple right 4": 917504,
    "temple right 3": 983040,
    "temple right 2": 1048576,
    "temple right 1": 1114112,
    "temple right": 1179648,
    "forehead right": 1245184,
    "forehead 4": 1310720,
    "forehead 3": 1376256,
    "forehead middle": 1441792,
    "forehead 2": 1507328,
    "forehead 1": 1572864,
    "forehead left": 1638400,
    "temple left": 1703936,
    "temple left 1": 1769472,
    "temple left 2": 1835008,
    "temple left 3": 1900544,
    "temple left 4": 1966080,
    "eye right outer": 2031616,
    "eye right bottom outer": 2097152,
    "eye right bottom": 2162688,
    "eye right bottom inner": 2228224,
    "eye right inner": 2293760,
    "eye right top inner": 2359296,
    "eye right top": 2424832,
    "eye right top outer": 2490368,
    "eye left outer": 2555904,
    "eye left top outer": 2621440,
    "eye left top": 2686976,
    "eye left top inner": 2752512,
    "eye left inner": 2818048,
    "eye left bottom inner": 2883584,
    "eye left bottom": 2949120,
    "eye left bottom outer": 3014656,
    "eyebrow right inner": 3080192,
    "eyebrow right top inner": 3145728,
    "eyebrow right top": 3211264,
    "eyebrow right top outer": 3276800,
    "eyebrow right outer": 3342336,
    "eyebrow right bottom outer": 3407872,
    "eyebrow right botom": 3473408,
    "eyebrow rigth bottom inner": 3538944,
    "eyebrow left inner": 3604480,
    "eyebrow left top inner": 3670016,
    "eyebrow left top": 3735552,
    "eyebrow left top outer": 3801088,
    "eyebrow left outer": 3866624,
    "eyebrow left bottom outer": 3932160,
    "eyebrow left bottom": 3997696,
    "eyebrow left bottom inner": 4063232,
    "mouth left": 4128768,
    "mouth left top": 4194304,
    "mouth top": 4259840,
    "mouth right top": 4325376,
    "mouth right": 4390912,
    "mouth right bottom": 4456448,
    "mouth bottom": 4521984,
    "mouth left bottom": 4587520,
    "nose left top": 4653056,
    "nose left top inner": 4718592,
    "nose left top outer": 4784128,
    "nose left bottom outer": 4849664,
    "nose left bottom inner": 4915200,
    "nose bottom": 4980736,
    "nose right bottom inner": 5046272,
    "nose right bottom outer": 5111808,
    "nose right top outer": 5177344,
    "nose right top inner": 5242880,
    "nose right top": 5308416,
    "eye right iris": 5373952,
    "eye left iris": 5439488,
    "nose tip": 5505024,
    "cheekbone left": 5570560,
    "cheekbone right": 5636096,
}

# Paired names: (Betaface name with "{side}", mesh vertex on the subject's left, on the subject's right).
# Betaface's misspelt right-brow names are handled in `_name`.
PAIRED = (
    ("chin ear {side}", 454, 234),
    ("chin {side} 1", 361, 132),
    ("chin {side} 2", 288, 58),
    ("chin {side} 3", 365, 136),
    ("chin {side} 4", 379, 150),
    ("chin {side} 5", 400, 176),
    ("temple {side} 4", 356, 127),
    ("temple {side} 3", 389, 162),
    ("temple {side} 2", 251, 21),
    ("temple {side} 1", 284, 54),
    ("temple {side}", 332, 103),
    ("forehead {side}", 297, 67),
    ("eyebrow {side} inner", 336, 107),
    ("eyebrow {side} top inner", 296, 66),
    ("eyebrow {side} top", 334, 105),
    ("eyebrow {side} top outer", 293, 63),
    ("eyebrow {side} outer", 300, 70),
    ("eyebrow {side} bottom outer", 276, 46),
    ("eyebrow {side} bottom", 282, 52),
    ("eyebrow {side} bottom inner", 295, 65),
    ("mouth {side}", 291, 61),
    ("mouth {side} top", 269, 39),
    ("mouth {side} bottom", 405, 181),
    ("cheekbone {side}", 345, 116),
    ("nose {side} top", 351, 122),
    ("nose {side} top inner", 419, 196),
    ("nose {side} top outer", 360, 131),
    ("nose {side} bottom outer", 294, 64),
    ("nose {side} bottom inner", 328, 99),
)
# Betaface's "forehead 4" .. "forehead 1" run from its right side to its left: 4 and 1 are vertices, 3 and 2
# the midpoints of the hairline arc between them and "forehead middle".
FOREHEAD_SIDE = (("forehead 1", 338, 109), ("forehead 4", 109, 338))  # (name, if left=subject left, else)
FOREHEAD_BETWEEN = {"forehead 1": "forehead 2", "forehead 4": "forehead 3"}
FOREHEAD_MIDDLE = 10
MIDLINE = (
    ("chin bottom", 152),
    ("forehead middle", 10),
    ("mouth top", 0),
    ("mouth bottom", 17),
    ("nose bottom", 2),
)
MIDLINE_NOSE_TIP = 4  # mesh pronasale; reported as "nose tip" only when the detector's is replaced

# Eye points from the iris network's contour (index into its 71 points; 0 outer corner, 8 inner corner).
EYE_CONTOUR = (
    ("eye {side} outer", 0),
    ("eye {side} bottom outer", 2),
    ("eye {side} bottom", 4),
    ("eye {side} bottom inner", 6),
    ("eye {side} inner", 8),
    ("eye {side} top inner", 14),
    ("eye {side} top", 12),
    ("eye {side} top outer", 10),
)

# Mesh vertices matching the iBUG 68 points (image-left jaw end first, as iBUG orders them), used for the
# accuracy test and offered to callers that want the 68-point layout.
IBUG68 = np.array(
    [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389]  # jaw 0-16
    + [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]  # brows 17-26
    + [168, 197, 5, 4, 75, 97, 2, 326, 305]  # nose 27-35
    + [33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380]  # eyes 36-47
    + [61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181]  # outer lips 48-59
    + [78, 82, 13, 312, 308, 317, 14, 87]  # inner lips 60-67
)


@dataclass
class DenseLandmarks:
    """Per face, image pixels: mesh (N, 468, 3), eye contours (N, 2, 71, 3) and irises (N, 2, 5, 3),
    eye index 0 = subject's right eye, 1 = subject's left eye; mesh face score (N,)."""

    mesh: np.ndarray
    eye_contour: np.ndarray
    iris: np.ndarray
    face_score: np.ndarray
    rois: np.ndarray  # (N, 4) mesh crop ROIs (cx, cy, size, angle)

    def __len__(self) -> int:
        return len(self.mesh)


class LandmarkModels:
    def __init__(self, mesh: FaceMesh, iris: IrisLandmarks) -> None:
        self.mesh = mesh
        self.iris = iris

    @classmethod
    def from_files(
        cls,
        mesh_path: str | Path,
        iris_path: str | Path,
        session_factory: Callable[[Path], ort.InferenceSession] | None = None,
    ) -> LandmarkModels:
        return cls(
            FaceMesh.from_file(mesh_path, session_factory),
            IrisLandmarks.from_file(iris_path, session_factory),
        )

    def predict(self, image: np.ndarray, boxes: np.ndarray, landmarks5: np.ndarray) -> DenseLandmarks:
        """Mesh + iris of all faces of one RGB image (detector boxes (N, 4), landmarks5 (N, 5, 2))."""
        n = len(boxes)
        rois = face_rois(boxes, np.asarray(landmarks5)[:, :2], scale=FACE_ROI_SCALE)
        size = self.mesh.input_size
        crops = warp_crops(image, rois, size)
        landmarks, score = self.mesh.predict(crops)
        mesh = points_to_image(landmarks, rois, size)

        eyes = eye_rois(mesh).reshape(n * 2, 4)  # face-major: right eye, left eye
        esize = self.iris.input_size
        contour, iris = self.iris.predict(warp_crops(image, eyes, esize), np.tile(EYE_MIRROR, n))
        contour = points_to_image(contour, eyes, esize).reshape(n, 2, -1, 3)
        iris = points_to_image(iris, eyes, esize).reshape(n, 2, -1, 3)
        return DenseLandmarks(mesh, contour, iris, score, rois)


def _name(template: str, subject_left: bool) -> str:
    # Betaface "left" is the image's left when BETAFACE_LEFT_IS_IMAGE_LEFT, i.e. the subject's right.
    is_left = subject_left != basic.BETAFACE_LEFT_IS_IMAGE_LEFT
    name = template.format(side="left" if is_left else "right")
    return {
        "eyebrow right bottom": "eyebrow right botom",
        "eyebrow right bottom inner": "eyebrow rigth bottom inner",
    }.get(name, name)


def _point(xy: np.ndarray, name: str) -> Point:
    return Point(x=round(float(xy[0]), 2), y=round(float(xy[1]), 2), type=BETAFACE_TYPES[name], name=name)


def betaface_points(dense: DenseLandmarks, i: int) -> list[Point]:
    """Betaface's pro points (plus the basic eye corners) of face i; see the module docstring."""
    mesh, contour, iris = dense.mesh[i], dense.eye_contour[i], dense.iris[i]
    out: list[Point] = []
    for template, v_left, v_right in PAIRED:
        out.append(_point(mesh[v_left], _name(template, True)))
        out.append(_point(mesh[v_right], _name(template, False)))
    forehead = (
        FOREHEAD_SIDE
        if not basic.BETAFACE_LEFT_IS_IMAGE_LEFT
        else tuple((n, b, a) for n, a, b in FOREHEAD_SIDE)
    )
    for name, vertex, _ in forehead:
        out.append(_point(mesh[vertex], name))
        out.append(_point((mesh[vertex] + mesh[FOREHEAD_MIDDLE]) / 2, FOREHEAD_BETWEEN[name]))
    for name, vertex in MIDLINE:
        out.append(_point(mesh[vertex], name))
    for eye, subject_left in ((1, True), (0, False)):
        for template, k in EYE_CONTOUR:
            out.append(_point(contour[eye, k], _name(template, subject_left)))
        out.append(_point(iris[eye, 0], _name("eye {side} iris", subject_left)))
        out.append(_point(contour[eye, 0], _name("basic eye {side} outer", subject_left)))
        out.append(_point(contour[eye, 8], _name("basic eye {side} inner", subject_left)))
    return out


def ibug68(dense: DenseLandmarks) -> np.ndarray:
    """(N, 68, 2) mesh points in iBUG 300-W order, eye corners/lids refined by the iris contour."""
    pts = dense.mesh[:, IBUG68, :2].copy()
    # Contour indices for iBUG 36-41 (outer, top x2, inner, bottom x2) on each eye.
    ring = [0, 11, 13, 8, 5, 3]
    pts[:, 36:42] = dense.eye_contour[:, 0, ring, :2]
    pts[:, 42:48] = dense.eye_contour[:, 1, [8, 13, 11, 0, 3, 5], :2]
    return pts
