"""Plain data passed between pipeline stages and to the worker task (numpy in, numpy out)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    type: int
    name: str


@dataclass(frozen=True)
class Tag:
    name: str
    value: str
    confidence: float = 1.0


@dataclass
class FaceAnalysis:
    """One detected face. Coordinates are pixels of the decoded (EXIF-rotated) image."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    landmarks5: (
        np.ndarray
    )  # (5, 2) float32: right eye, left eye, nose tip, right mouth, left mouth (image order)
    angle: float = 0.0  # in-plane rotation in degrees, from the eye line
    points: list[Point] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    embeddings: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # model id -> L2-normalised float32 vector
