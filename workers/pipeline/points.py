"""Betaface point type ids for the detector's 5 points.

Betaface's "left"/"right": its reference response (reference/betaface-api.txt, GetImageInfo example) puts
"basic eye left" at x=314 and "basic eye right" at x=345 on a frontal face, i.e. Betaface's "left" is
the side on the image's left (the subject's right). landmarks5 is in image order (index 0 = eye on the
image's left), so the mapping is index for index. Flip BETAFACE_LEFT_IS_IMAGE_LEFT if that reading of
the reference turns out wrong; every basic point follows it.
"""

from __future__ import annotations

import numpy as np

from workers.pipeline.types import Point

BETAFACE_LEFT_IS_IMAGE_LEFT = True

BASIC_EYE_LEFT = 512
BASIC_EYE_RIGHT = 768
BASIC_MOUTH_LEFT = 2048
BASIC_MOUTH_RIGHT = 2304
NOSE_TIP = 5505024

NAMES = {
    BASIC_EYE_LEFT: "basic eye left",
    BASIC_EYE_RIGHT: "basic eye right",
    BASIC_MOUTH_LEFT: "basic mouth left",
    BASIC_MOUTH_RIGHT: "basic mouth right",
    NOSE_TIP: "nose tip",
}

# Betaface type of landmarks5[i] (image order: eye, eye, nose tip, mouth corner, mouth corner).
if BETAFACE_LEFT_IS_IMAGE_LEFT:
    LANDMARK5_TYPES = (BASIC_EYE_LEFT, BASIC_EYE_RIGHT, NOSE_TIP, BASIC_MOUTH_LEFT, BASIC_MOUTH_RIGHT)
else:
    LANDMARK5_TYPES = (BASIC_EYE_RIGHT, BASIC_EYE_LEFT, NOSE_TIP, BASIC_MOUTH_RIGHT, BASIC_MOUTH_LEFT)


def basic_points(landmarks5: np.ndarray) -> list[Point]:
    """The 5 detector points of one face (5, 2) as Betaface points."""
    return [
        Point(x=float(x), y=float(y), type=kind, name=NAMES[kind])
        for (x, y), kind in zip(landmarks5, LANDMARK5_TYPES, strict=True)
    ]
