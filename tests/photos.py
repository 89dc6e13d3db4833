"""Test photos: the research sets in ../shared/data when present, and free photos that always are.

The research photos (LFW-style identities, WIDER, UTKFace, ...) may never ship: their licences forbid
it. Tests that need them are marked `requires_shared_data` and skip with one clear reason where the
folder is absent (a user's clone); CI has it and runs them all.

The free photos come from packages on the package index and may be used by anyone:
- `astronaut()`: Eileen Collins, NASA portrait (public domain), shipped by scikit-image;
- `hopper()`: Grace Hopper, U.S. Navy portrait (public domain), shipped by matplotlib;
- `cat()`: scikit-image's `chelsea` (CC0), a photo with no human face;
- `group()`: both portraits side by side on one canvas, made here.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason="needs the research photos in ../shared/data (not shipped: their licences forbid it; CI has them)",
)
requires_shared_models = pytest.mark.skipif(
    not SHARED_MODELS.is_dir(), reason="needs the upstream model copies in ../shared/models (CI has them)"
)


@cache
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@cache
def hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@cache
def cat() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.chelsea())


@cache
def group() -> np.ndarray:
    """Two different people on one 1100×600 canvas: astronaut on the left, Hopper on the right."""
    canvas = np.full((600, 1100, 3), 235, np.uint8)
    left, right = astronaut(), hopper()
    canvas[40 : 40 + left.shape[0], 20 : 20 + left.shape[1]] = left
    canvas[: right.shape[0], 560 : 560 + right.shape[1]] = right[:600, :520]
    return canvas


def encode(rgb: np.ndarray, format: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format, **({"quality": 92} if format == "JPEG" else {}) | params)
    return buffer.getvalue()
