"""What counts as an acceptable image: formats and limits, checked from the header alone (cheap, no decode).

The api uses it to refuse bad uploads at once; the worker uses it again before the full decode.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from schema.errors import ErrorCode, FacequeueError

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "MPO"})  # MPO: multi-picture JPEG

# Our own pixel limit is enforced explicitly; Pillow's bomb check would only warn or raise its own type.
Image.MAX_IMAGE_PIXELS = None


def sniff(data: bytes, max_bytes: int, max_pixels: int) -> tuple[str, int, int]:
    """Return (format, width, height) or raise FacequeueError. Reads the header only."""
    if not data:
        raise FacequeueError(ErrorCode.EMPTY_IMAGE)
    if len(data) > max_bytes:
        raise FacequeueError(
            # "more than": a multipart route reads at most one byte past the limit
            ErrorCode.IMAGE_TOO_LARGE,
            f"image is more than {max_bytes} bytes, the limit",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FacequeueError(ErrorCode.NOT_AN_IMAGE) from exc
    if image.format not in SUPPORTED_FORMATS:
        raise FacequeueError(ErrorCode.NOT_AN_IMAGE, f"format {image.format} is not supported")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise FacequeueError(ErrorCode.IMAGE_CORRUPT, "image has no pixels")
    if width * height > max_pixels:
        raise FacequeueError(
            ErrorCode.IMAGE_TOO_MANY_PIXELS, f"image is {width}x{height}; the limit is {max_pixels} pixels"
        )
    return ("JPEG" if image.format == "MPO" else image.format), width, height
