"""`quality_checks` upload option: the liveness API's face-quality error codes that apply to an image.

Codes and their meaning are those of reference/liveness-face-detect-api.txt. The image-level codes look at
all faces; the others at the best face (faces[0], highest detection score), the one liveness is judged on.

- FACE_NOT_FOUND: no face detected.
- TOO_MANY_FACES: more than `max_faces` faces.
- FACE_TOO_SMALL: inter-pupil distance (the `inter_pupil_distance` tag, or the detector's eye points when
  the tag is absent) below `min_inter_pupil_px`, or box long side below `min_face_px`, or box long side
  below `min_relative_size` of the image's shorter side.
- FACE_TOO_CLOSE: box long side above `max_relative_size` of the image's shorter side (too little image
  around the face: MiniFASNet V2 wants 2.7x the box).
- FACE_CROPPED: the box or any of the face's points lies outside the image.
- FACE_CLOSE_TO_BORDER: the box (inside the image) is closer to an edge than `min_border_margin` x its
  long side.
- FACE_ANGLE_TOO_LARGE: |yaw| above `max_yaw` or |pitch - PITCH_FRONTAL| above `max_pitch`, from the
  `yaw`/`pitch` tags (`classifiers`); without them no angle check is made.

Not produced: FACE_IS_OCCLUDED. Nothing in our models measures occlusion: the mesh gives one face-presence
score (`DenseLandmarks.face_score`) and no per-point visibility, and that score is not trained on masks,
so a code backed by it would be a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.pipeline.types import FaceAnalysis

FACE_NOT_FOUND = "FACE_NOT_FOUND"
TOO_MANY_FACES = "TOO_MANY_FACES"
FACE_TOO_SMALL = "FACE_TOO_SMALL"
FACE_TOO_CLOSE = "FACE_TOO_CLOSE"
FACE_CLOSE_TO_BORDER = "FACE_CLOSE_TO_BORDER"
FACE_CROPPED = "FACE_CROPPED"
FACE_ANGLE_TOO_LARGE = "FACE_ANGLE_TOO_LARGE"

# The mesh-based pitch of a frontal portrait reads about +10 degrees (see workers.pipeline.attributes).
PITCH_FRONTAL = 10.0


@dataclass(frozen=True)
class QualityThresholds:
    max_faces: int = 1  # the liveness API judges one face per image
    min_inter_pupil_px: float = 30.0  # below this the eye region is a few pixels wide
    min_face_px: float = 80.0  # MiniFASNet's input side: smaller faces get upscaled
    min_relative_size: float = 0.1  # box long side / image shorter side
    max_relative_size: float = 0.8  # above this the face fills the frame
    min_border_margin: float = 0.05  # gap to the nearest edge / box long side
    max_yaw: float = 30.0  # upstream MiniFASNet's published figure holds for yaw under 30 degrees
    max_pitch: float = 25.0  # around PITCH_FRONTAL


def _tag(face: FaceAnalysis, name: str) -> float | None:
    for tag in face.tags:
        if tag.name == name:
            try:
                return float(tag.value)
            except ValueError:
                return None
    return None


def quality_checks(
    image_shape: tuple[int, ...], faces: list[FaceAnalysis], settings: QualityThresholds | None = None
) -> list[str]:
    """Error codes (in the reference's order of severity) that apply; [] when the image passes."""
    t = settings if settings is not None else QualityThresholds()
    if not faces:
        return [FACE_NOT_FOUND]
    codes = []
    if len(faces) > t.max_faces:
        codes.append(TOO_MANY_FACES)
    h, w = image_shape[:2]
    face = faces[0]
    x1, y1, x2, y2 = (float(v) for v in face.box)
    side = max(x2 - x1, y2 - y1)
    ipd = _tag(face, "inter_pupil_distance")
    if ipd is None:
        ipd = float(np.linalg.norm(np.asarray(face.landmarks5[0]) - np.asarray(face.landmarks5[1])))
    if ipd < t.min_inter_pupil_px or side < t.min_face_px or side < t.min_relative_size * min(h, w):
        codes.append(FACE_TOO_SMALL)
    if side > t.max_relative_size * min(h, w):
        codes.append(FACE_TOO_CLOSE)
    points = [(p.x, p.y) for p in face.points] + [(x1, y1), (x2, y2)]
    if any(not (0 <= x <= w and 0 <= y <= h) for x, y in points):
        codes.append(FACE_CROPPED)
    elif min(x1, y1, w - x2, h - y2) < t.min_border_margin * side:
        codes.append(FACE_CLOSE_TO_BORDER)
    yaw, pitch = _tag(face, "yaw"), _tag(face, "pitch")
    if (yaw is not None and abs(yaw) > t.max_yaw) or (
        pitch is not None and abs(pitch - PITCH_FRONTAL) > t.max_pitch
    ):
        codes.append(FACE_ANGLE_TOO_LARGE)
    return codes
