"""Re-embedding reads the detector's 5 points back from a stored face's points."""

from __future__ import annotations

import numpy as np
import pytest

from workers.pipeline.points import basic_points
from workers.reembed import landmarks5


def test_landmarks5_round_trip_through_stored_points() -> None:
    points = np.array([[30, 40], [60, 41], [45, 55], [33, 70], [58, 71]], np.float32)
    stored = [{"x": p.x, "y": p.y, "type": p.type, "name": p.name} for p in basic_points(points)]
    # Dense points follow the basic ones in storage; their types never collide with the basic five.
    stored += [{"x": 1.0, "y": 2.0, "type": 99, "name": "chin"}]
    np.testing.assert_array_equal(landmarks5(stored[::-1]), points)


def test_landmarks5_needs_all_five() -> None:
    points = basic_points(np.zeros((5, 2), np.float32))[:4]
    with pytest.raises(ValueError, match="basic point"):
        landmarks5([{"x": p.x, "y": p.y, "type": p.type, "name": p.name} for p in points])
