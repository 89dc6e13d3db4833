"""The peer to beat: ageitgey's face_recognition on dlib-bin, with its model files from our model pack.

face_recognition imports `face_recognition_models` (a 100 MB package) only to find four .dat files; a
stand-in module pointing at the fetched, hash-checked copies replaces it (install the peer with
`pip install --no-deps face_recognition`).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest

from workers.models.fetch import fetch_source


def load_face_recognition() -> Any:
    """The face_recognition module, or a pytest skip when dlib / face_recognition are not installed."""
    pytest.importorskip("dlib")
    if "face_recognition_models" not in sys.modules:
        stand_in = types.ModuleType("face_recognition_models")
        paths = {
            "pose_predictor_model_location": "shape_predictor_68",
            "pose_predictor_five_point_model_location": "shape_predictor_5",
            "face_recognition_model_location": "dlib_resnet",
            "cnn_face_detector_model_location": "mmod_detector",
        }
        for function, model in paths.items():
            path = str(fetch_source(model))
            setattr(stand_in, function, lambda path=path: path)
        sys.modules["face_recognition_models"] = stand_in
    return pytest.importorskip("face_recognition")


class PeerEncoder:
    """face_recognition's defaults: HOG detector (upsample 1), 5-point landmarks, ResNet, Euclidean distance."""

    def __init__(self) -> None:
        self.fr = load_face_recognition()

    def largest_face(self, image: np.ndarray) -> np.ndarray | None:
        boxes = self.fr.face_locations(image)  # (top, right, bottom, left)
        if not boxes:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
        return np.asarray(self.fr.face_encodings(image, [box])[0], np.float32)

    def encodings(self, image: np.ndarray) -> list[np.ndarray]:
        """Every face of the image, as face_recognition.face_encodings(image) gives them."""
        return [np.asarray(e, np.float32) for e in self.fr.face_encodings(image)]
