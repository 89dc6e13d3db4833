"""Face attribute tags (`classifiers`) and colour tags (`extended`), each from a model or a measurement.

The `extended` geometric tags (eyes distance, mouth width, ...) are in `workers.pipeline.measurements`.

Tags (values are strings, as Betaface's; confidence 1.0 where the value is a measurement):
- expression: top class of the fer emotion model, its probability as confidence; `emotion <class>` for
  each of the 7 classes (value and confidence = its probability), for adapters that return all scores.
- smile: yes when the emotion model's "happy" probability is >= 0.5; confidence = that probability (yes)
  or 1 - it (no). From the model only; mouth-corner geometry is not used.
- mouth open: inner-lip gap (mesh 13-14) / mouth width (mesh 61-291) >= MOUTH_OPEN_RATIO; the ratio is
  reported as "mouth opening".
- eye_left_open / eye_right_open: eye aspect ratio on the iris network's eye contour,
  (|top outer - bottom outer| + |top inner - bottom inner|) / (2 |outer - inner corner|) >= EYE_OPEN_EAR
  (0.12: below the narrowed-but-open eyes we measured; no closed-eye photo checked it yet); the ratio is reported as "eye_left_aspect" / "eye_right_aspect".
  Left/right follow the Betaface point convention (`workers.pipeline.points`).
- yaw, pitch (degrees) from the mesh's 3-D points (see `head_pose`); roll (degrees) is the angle of the
  line between the iris centres (the iris network follows an image rotation to within a degree or two,
  the mesh's own eye line lags when the detector's eye points, which set the mesh crop, are off).
  Pitch is relative to the eyes-mouth plane: frontal portraits read about +10 (the mouth sits forward of
  the eyes in the mesh's depth).
- blur, exposure, noise: Azure-like levels with a value, measured on the grey face region (see
  `image_quality`); level boundaries calibrated on degradation ladders of real photos
  (tools/calibrate_quality.py, quality_calibration.json).
- quality_for_recognition (low, medium, high) and quality (good = high, else poor): the predicted share of
  the face's genuine pairs accepted at FMR 1e-3, a logistic model fitted on genuine-pair outcomes
  (tools/calibrate_quality.py); confidence = that prediction.
- face_size (detector box, longer side, px) and inter_pupil_distance (iris centres, px).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from facequeue.settings import Settings
from workers.models.emotion import LABELS, EmotionClassifier, crop_chip
from workers.pipeline import points as basic
from workers.pipeline.landmarks import DenseLandmarks, LandmarkModels
from workers.pipeline.types import FaceAnalysis, Tag

MOUTH_OPEN_RATIO = 0.15
EYE_OPEN_EAR = 0.12  # open eyes on the face-api.js photos: 0.15-0.30 (smiling 0.15); squinting 0.07-0.12
SMILE_HAPPY = 0.5
# blur, exposure, noise and recognition quality: fitted by tools/calibrate_quality.py.
QUALITY_CALIBRATION_PATH = Path(__file__).with_name("quality_calibration.json")
QUALITY_CHIP = 48  # px: the inner face region is resampled to this for the blur measure
EMOTION_TAG = "emotion {}"


@cache
def quality_calibration() -> dict:
    return json.loads(QUALITY_CALIBRATION_PATH.read_text())


# Mesh vertex pairs (subject's left, subject's right) that define the head's left-right axis.
_SYMMETRIC = ((263, 33), (362, 133), (291, 61), (454, 234), (361, 132), (300, 70), (345, 116), (389, 162))
_EYES = (33, 133, 362, 263)
_MOUTH = (61, 291, 0, 17)


def head_pose(mesh: np.ndarray) -> np.ndarray:
    """(N, 468, 3) mesh in image pixels -> (N, 3) yaw, pitch, roll in degrees.

    The head frame is measured on the mesh itself: x = mean of (subject-left - subject-right) over
    symmetric vertex pairs, y = from the eye centre to the mouth centre made orthogonal to x, z = x cross y.
    Image axes are x right, y down, z away from the camera (the mesh's z: smaller = nearer). A face
    looking into the camera has x = (1, 0, 0), y = (0, 1, 0): yaw = pitch = roll = 0 (pitch 0 means the
    eyes-mouth plane faces the camera). Signs: yaw > 0 when the face turns toward the image's right,
    pitch > 0 when it tilts up, roll > 0 when the eye line turns clockwise on screen.
    """
    mesh = np.asarray(mesh, np.float64)
    x = np.mean([mesh[:, a] - mesh[:, b] for a, b in _SYMMETRIC], axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = mesh[:, list(_MOUTH)].mean(1) - mesh[:, list(_EYES)].mean(1)
    y -= (y * x).sum(1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    forward = -np.cross(x, y)  # toward the camera for a frontal face: (0, 0, -1)
    yaw = np.degrees(np.arctan2(forward[:, 0], -forward[:, 2]))
    pitch = np.degrees(np.arctan2(-forward[:, 1], np.hypot(forward[:, 0], forward[:, 2])))
    roll = np.degrees(np.arctan2(x[:, 1], x[:, 0]))
    return np.column_stack([yaw, pitch, roll])


def eye_aspect_ratios(eye_contour: np.ndarray) -> np.ndarray:
    """(N, 2, 71, 3) iris-network eye contours -> (N, 2) eye aspect ratios (subject's right, left)."""
    c = np.asarray(eye_contour, np.float64)[..., :2]

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(c[:, :, a] - c[:, :, b], axis=-1)

    # Contour: 0 outer, 8 inner corner; 10/2 above/below the outer third, 14/6 the inner third.
    return (dist(10, 2) + dist(14, 6)) / (2 * np.maximum(dist(0, 8), 1e-6))


def mouth_opening(mesh: np.ndarray) -> np.ndarray:
    m = np.asarray(mesh, np.float64)[..., :2]
    gap = np.linalg.norm(m[:, 13] - m[:, 14], axis=1)
    width = np.linalg.norm(m[:, 61] - m[:, 291], axis=1)
    return gap / np.maximum(width, 1e-6)


def _face_region(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    # The inner 60% of the detector box: skin, eyes, mouth; little hair or background.
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    xs = np.clip([x1 + 0.2 * w, x2 - 0.2 * w], 0, grey.shape[1]).astype(int)
    ys = np.clip([y1 + 0.2 * h, y2 - 0.2 * h], 0, grey.shape[0]).astype(int)
    return grey[ys[0] : ys[1], xs[0] : xs[1]]


def blur_effect(chip: np.ndarray, h_size: int = 9) -> float:
    """Crete et al. (2007) no-reference blur: 0 sharp .. 1 blurred, the worse of both axes.

    The chip is blurred again with a 1 x h_size box filter; a sharp chip loses much of its neighbour
    differences, a blurred one little. Contrast-invariant (a ratio of sums)."""
    a = np.asarray(chip, np.float64)
    kernel = np.ones(h_size) / h_size
    worst = 0.0
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (h_size // 2, h_size // 2)
        padded = np.pad(a, pad, mode="reflect")
        reblurred = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), axis, padded)
        sharp = np.abs(np.diff(a, axis=axis))
        lost = np.maximum(0.0, sharp - np.abs(np.diff(reblurred, axis=axis)))
        total = sharp.sum()
        worst = max(worst, float((total - lost.sum()) / total) if total > 0 else 1.0)
    return worst


def noise_sigma(region: np.ndarray) -> float:
    """Immerkaer (1996) noise sigma (grey levels): the mask [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels image
    structure up to second order."""
    a = np.asarray(region, np.float64)
    m = a[:-2, :-2] - 2 * a[:-2, 1:-1] + a[:-2, 2:] - 2 * a[1:-1, :-2] + 4 * a[1:-1, 1:-1]
    m += -2 * a[1:-1, 2:] + a[2:, :-2] - 2 * a[2:, 1:-1] + a[2:, 2:]
    return float(np.sqrt(np.pi / 2) * np.abs(m).mean() / 6)


def image_quality(grey: np.ndarray, box: np.ndarray) -> tuple[float, float, float]:
    """(blur 0-1, mean luminance 0-1, noise sigma) of one face region (inner 60% of the box).

    Blur is measured on the region resampled to QUALITY_CHIP px, so a face reads the same at any size
    (a small face upsampled reads blurrier: it holds less detail). Noise is the per-pixel sigma at native
    resolution, exposure the mean luminance; levels in QUALITY_CALIBRATION (tools/calibrate_quality.py)."""
    region = _face_region(grey, box)
    if min(region.shape) < 3:
        return 1.0, 0.0, 0.0
    chip = np.asarray(
        Image.fromarray(region).resize((QUALITY_CHIP, QUALITY_CHIP), Image.BILINEAR, reducing_gap=2.0),
        np.float64,
    )
    return blur_effect(chip), float(region.mean() / 255.0), noise_sigma(region)


def _level(value: float, limits: tuple[float, float], names: tuple[str, str, str]) -> str:
    return names[0] if value < limits[0] else names[1] if value < limits[1] else names[2]


def recognition_quality(
    blur: float, exposure: float, noise: float, yaw: float, pitch: float, size: float, detection_score: float
) -> tuple[float, str]:
    """Predicted share of genuine pairs accepted at FMR 1e-3 (0-1) and its level: low, medium, high."""
    model = quality_calibration()["recognition"]
    x = np.array(
        [
            blur,
            abs(exposure - 0.5),
            np.log1p(noise),
            abs(yaw),
            abs(pitch - 10.0),  # frontal portraits read about +10 (see head_pose)
            np.log(max(size, 1.0)),
            detection_score,
        ]
    )
    z = (x - np.array(model["mean"])) / np.array(model["scale"])
    p = float(1 / (1 + np.exp(-(z @ np.array(model["coef"]) + model["intercept"]))))
    low, high = model["levels"]
    return p, "high" if p >= high else "medium" if p >= low else "low"


def _side_names() -> tuple[str, str]:
    """Tag side words for (subject's right eye, subject's left eye), as the Betaface points name them."""
    return ("left", "right") if basic.BETAFACE_LEFT_IS_IMAGE_LEFT else ("right", "left")


def iris_roll(dense: DenseLandmarks) -> np.ndarray:
    """(N,) in-plane rotation in degrees of the line between the iris centres; positive = clockwise.

    The one definition of a face's roll: the `angle` field and the `roll` tag both carry it whenever the
    dense stage ran (the detector's own eye points are off by up to 20 degrees on tilted heads)."""
    eye_line = dense.iris[:, 1, 0, :2] - dense.iris[:, 0, 0, :2]
    return np.degrees(np.arctan2(eye_line[:, 1], eye_line[:, 0]))


def face_tags(
    image: np.ndarray,
    boxes: np.ndarray,
    dense: DenseLandmarks,
    emotion: EmotionClassifier,
    scores: np.ndarray | None = None,
) -> list[list[Tag]]:
    """The `classifiers` tags of every face of one RGB image (all faces through the emotion model at once)."""
    grey = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("L"))
    boxes = np.asarray(boxes, np.float64)
    chips = np.stack([crop_chip(grey, (b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in boxes])
    probs = emotion.predict(chips)
    pose = head_pose(dense.mesh)
    rolls = iris_roll(dense)
    ears = eye_aspect_ratios(dense.eye_contour)
    opening = mouth_opening(dense.mesh)
    ipd = np.linalg.norm(dense.iris[:, 0, 0, :2] - dense.iris[:, 1, 0, :2], axis=1)
    sides = _side_names()
    levels = quality_calibration()["image"]["levels"]
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64)
    out = []
    for i, box in enumerate(boxes):
        top = int(np.argmax(probs[i]))
        happy = float(probs[i, LABELS.index("happy")])
        smile = happy >= SMILE_HAPPY
        yaw, pitch = pose[i, :2]
        roll = rolls[i]
        size = float(max(box[2] - box[0], box[3] - box[1]))
        blur, exposure, noise = image_quality(grey, box)
        quality, usefulness = recognition_quality(blur, exposure, noise, yaw, pitch, size, float(scores[i]))
        tags = [
            Tag("expression", LABELS[top], round(float(probs[i, top]), 3)),
            *(
                Tag(EMOTION_TAG.format(label), f"{p:.3f}", round(float(p), 3))
                for label, p in zip(LABELS, probs[i], strict=True)
            ),
            Tag("smile", "yes" if smile else "no", round(happy if smile else 1 - happy, 3)),
            Tag("mouth open", "yes" if opening[i] >= MOUTH_OPEN_RATIO else "no"),
            Tag("mouth opening", f"{opening[i]:.3f}"),
        ]
        for eye, side in enumerate(sides):
            tags.append(Tag(f"eye_{side}_open", "yes" if ears[i, eye] >= EYE_OPEN_EAR else "no"))
            tags.append(Tag(f"eye_{side}_aspect", f"{ears[i, eye]:.3f}"))
        tags += [
            Tag("yaw", f"{yaw:.1f}"),
            Tag("pitch", f"{pitch:.1f}"),
            Tag("roll", f"{roll:.1f}"),
            Tag("blur", _level(blur, levels["blur"], ("low", "medium", "high"))),
            Tag("blur value", f"{blur:.3f}"),
            Tag(
                "exposure",
                _level(exposure, levels["exposure"], ("underExposure", "goodExposure", "overExposure")),
            ),
            Tag("exposure value", f"{exposure:.3f}"),
            Tag("noise", _level(noise, levels["noise"], ("low", "medium", "high"))),
            Tag("noise value", f"{noise:.2f}"),
            Tag("quality", "good" if usefulness == "high" else "poor", round(quality, 3)),
            Tag("quality_for_recognition", usefulness, round(quality, 3)),
            Tag("face_size", f"{size:.0f}"),
            Tag("inter_pupil_distance", f"{ipd[i]:.1f}"),
        ]
        out.append(tags)
    return out


def _median_colour(image: np.ndarray, centres: np.ndarray, radius: float) -> str | None:
    """Median RGB (hex) of square patches around centres (K, 2), or None when none lies in the image."""
    h, w = image.shape[:2]
    r = max(int(round(radius)), 1)
    pixels = []
    for cx, cy in np.asarray(centres, np.float64).reshape(-1, 2):
        x, y = int(round(cx)), int(round(cy))
        if r <= x < w - r and r <= y < h - r:
            pixels.append(image[y - r : y + r + 1, x - r : x + r + 1].reshape(-1, 3))
    if not pixels:
        return None
    rgb = np.median(np.concatenate(pixels), axis=0).round().astype(int)
    return "".join(f"{c:02x}" for c in rgb)


def colour_tags(image: np.ndarray, dense: DenseLandmarks, i: int) -> list[Tag]:
    """`extended` colour tags of face i: median colour of patches placed with the mesh (see code)."""
    mesh = np.asarray(dense.mesh[i], np.float64)[:, :2]
    iod = float(np.linalg.norm(dense.iris[i, 0, 0, :2] - dense.iris[i, 1, 0, :2]))
    right = (mesh[[263, 362, 291, 454]].mean(0) - mesh[[33, 133, 61, 234]].mean(0)) / 2  # half-width axis
    down = mesh[152] - mesh[10]  # forehead top -> chin
    width = np.linalg.norm(mesh[454] - mesh[234])
    regions = {
        # Cheeks and forehead (mesh 50/280 cheeks, 151 forehead, 108/337 upper forehead sides).
        "color skin": (mesh[[50, 280, 151, 108, 337]], 0.08 * iod),
        # The iris ring: points between the iris centre and its edge, away from the pupil and highlights.
        "color eyes": (
            np.concatenate(
                [0.3 * dense.iris[i, e, :1, :2] + 0.7 * dense.iris[i, e, 1:, :2] for e in range(2)]
            ),
            0.03 * iod,
        ),
        # Above the mesh's top (its vertex 10 sits below the hairline on most faces).
        "color hair": (mesh[[10, 109, 338]] - 0.2 * down, 0.08 * iod),
        # Beside the head at eye level, half a face width out from the oval.
        "color background": (
            np.stack(
                [
                    mesh[454] + right / np.linalg.norm(right) * 0.5 * width,
                    mesh[234] - right / np.linalg.norm(right) * 0.5 * width,
                ]
            ),
            0.1 * iod,
        ),
        # Below the chin by 0.6 of the face height, on the body's centre line.
        "color clothes middle": (mesh[[152]] + 0.6 * down, 0.2 * iod),
    }
    tags = []
    for name, (centres, radius) in regions.items():
        colour = _median_colour(np.asarray(image), centres, radius)
        if colour is not None:
            tags.append(Tag(name, colour))
    return tags


class DenseModels:
    """Mesh + iris + emotion, loaded together for the pipeline (`load_dense_models`)."""

    def __init__(self, landmarks: LandmarkModels, emotion: EmotionClassifier) -> None:
        self.landmarks = landmarks
        self.emotion = emotion


def load_dense_models(settings: Settings, factory: Callable[[Path], ort.InferenceSession]) -> DenseModels:
    from workers.models.fetch import model_path

    landmarks = LandmarkModels.from_files(
        model_path("face_landmark", settings), model_path("iris_landmark", settings), factory
    )
    return DenseModels(landmarks, EmotionClassifier.from_file(model_path("emotion", settings), factory))


def annotate_faces(
    models: DenseModels,
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks5: np.ndarray,
    faces: list[FaceAnalysis],
    flags: set[str],
    landmark_set: str = "betaface",
    scores: np.ndarray | None = None,
) -> None:
    """Add dense points (`propoints`), tags (`classifiers`) and colours (`extended`, best face) to faces.

    The detector's 5 basic points stay as they are; the dense set adds Betaface's pro points and the
    basic eye corners (`landmark_set` picks another vendor's named set instead, see
    `workers.pipeline.landmark_sets`). Faces are in detection-score order, so faces[0] is the best face.
    """
    if not faces or not flags & {"propoints", "classifiers", "extended"}:
        return
    dense = models.landmarks.predict(image, boxes, landmarks5)
    for face, roll in zip(faces, iris_roll(dense), strict=True):
        face.angle = round(float(roll), 1)  # the same number as the roll tag
    if flags & {"propoints", "extended"}:  # Betaface: extended turns pro points on
        from workers.pipeline.landmark_sets import named_points

        for i, face in enumerate(faces):
            face.points.extend(named_points(dense, i, landmark_set))
    if "classifiers" in flags:
        for face, tags in zip(faces, face_tags(image, boxes, dense, models.emotion, scores), strict=True):
            face.tags.extend(tags)
    if "extended" in flags:
        from workers.pipeline.measurements import measurement_tags

        faces[0].tags.extend(colour_tags(image, dense, 0))
        faces[0].tags.extend(measurement_tags(dense.mesh[0], dense.iris[0], dense.eye_contour[0]))
