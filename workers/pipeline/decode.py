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


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    image_format, _, _ = sniff(data, max_bytes, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.seek(0)  # GIF / multi-frame: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise FacequeueError(ErrorCode.IMAGE_CORRUPT, f"image could not be decoded: {exc}") from exc
    return DecodedImage(rgb=rgb, format=image_format, width=rgb.shape[1], height=rgb.shape[0])
