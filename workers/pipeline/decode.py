"""Bytes -> RGB uint8 array, EXIF orientation applied, every failure mapped to an error code."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from schema.errors import ErrorCode, FacequeueError
from schema.images import sniff


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, after EXIF orientation
    format: str
    width: int  # of the oriented image
    height: int


BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as a browser shows them


def _scaled_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to 8-bit. `convert("L")` clips (a 16-bit photo turns white):
    scale by the nominal range the values use instead: [0, 1] for floats that fit it, 8 or 16 bits, or
    the image's own maximum beyond that."""
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0 and high <= 1:
        top = 1.0
    elif low >= 0 and high <= 255 and not image.mode.startswith("I;16"):
        top = 255.0
    elif low >= 0 and high <= 65535:
        top = 65535.0
    else:  # signed or wider than 16 bits: stretch what is there
        values, top = values - min(low, 0.0), max(high - min(low, 0.0), 1.0)
    scaled = np.nan_to_num(values / top * 255.0, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any mode Pillow opens to (H, W, 3) uint8 RGB: high bit depths scaled (not clipped), transparency
    composited over white (not dropped onto whatever colour the hidden pixels hold), CMYK, palettes, 1-bit."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scaled_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa") or (
        image.mode in ("L", "RGB") and "transparency" in image.info
    ):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    image_format, _, _ = sniff(data, max_bytes, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.seek(0)  # GIF / multi-frame: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise FacequeueError(ErrorCode.IMAGE_CORRUPT, f"image could not be decoded: {exc}") from exc
    return DecodedImage(rgb=rgb, format=image_format, width=rgb.shape[1], height=rgb.shape[0])
