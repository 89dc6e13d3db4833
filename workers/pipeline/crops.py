"""Face crops kept at processing time: the api serves face images and average faces from them, so no
request ever decodes an original again (one 17 Mpx decode per face per call was the api's worst case)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

CROP_MARGIN = 0.6  # of the box size, each side: room for the aligned framing of a turned or tilted face
CROP_MAX_SIDE = 512  # pixels: face images are served at most this large
CROP_QUALITY = 92


@dataclass(frozen=True)
class Crop:
    jpeg: bytes
    left: float  # crop pixel = (image pixel - (left, top)) * scale
    top: float
    scale: float
    landmarks5: np.ndarray  # (5, 2) the detector's points, in crop pixels


def make_crop(rgb: np.ndarray, box: np.ndarray, landmarks5: np.ndarray) -> Crop:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    left, top = max(0, int(x1 - CROP_MARGIN * w)), max(0, int(y1 - CROP_MARGIN * h))
    right = min(rgb.shape[1], int(np.ceil(x2 + CROP_MARGIN * w)))
    bottom = min(rgb.shape[0], int(np.ceil(y2 + CROP_MARGIN * h)))
    region = rgb[top : max(bottom, top + 1), left : max(right, left + 1)]
    width, height = region.shape[1], region.shape[0]
    # A big face is first thinned by an integer step (a view: no copy of megapixels), leaving at most a
    # 2× Lanczos reduction to do; the cost per face stays a few milliseconds on a 17 Mpx photo.
    step = max(1, max(width, height) // (2 * CROP_MAX_SIDE))
    image = Image.fromarray(np.ascontiguousarray(region[::step, ::step]))
    scale = min(1.0, CROP_MAX_SIDE / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        scale = size[0] / width  # the scale actually applied (x; y differs by < 1 px)
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=CROP_QUALITY)
    points = (np.asarray(landmarks5, np.float64) - (left, top)) * scale
    return Crop(buffer.getvalue(), float(left), float(top), float(scale), points)


def to_crop(points: np.ndarray, crop: Crop) -> np.ndarray:
    """Image-pixel points (K, 2) in the crop's pixels."""
    return (np.asarray(points, np.float64) - (crop.left, crop.top)) * crop.scale


def crop_rgb(crop: Crop) -> np.ndarray:
    with Image.open(io.BytesIO(crop.jpeg)) as image:
        return np.asarray(image.convert("RGB"))
