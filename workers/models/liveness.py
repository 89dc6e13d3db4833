"""Passive (single-image) liveness: the two MiniFASNet models of minivision's Silent-Face-Anti-Spoofing.

Facts (models/SOURCES.md): input [N, 3, 80, 80] BGR float32 in 0..255, no mean/std; output 3 logits,
class 1 = real, 0 and 2 = spoof. Each model sees its own crop around the face box: the box scaled 2.7x
(V2) or 4.0x (V1SE) about its centre. The crop follows upstream's `CropImage._get_new_box`: the scale is
first capped so the scaled box fits in the image, then a box that sticks out is *shifted* back inside
(not padded, not cut), so the network always sees image content at the trained scale where it can.
The crop is resized to 80x80 with plain bilinear interpolation (pixel centres at +0.5, no antialiasing),
which is what upstream's cv2.resize(INTER_LINEAR) does. The two models' softmax outputs are averaged.

The shipped graphs have a fixed batch of 1; `dynamic_model_bytes` frees the batch axis (input, output,
and the flatten Reshape's constant [1, -1] -> [0, -1]) so all faces of an image run as one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from workers.models.runtime import create_session

INPUT_SIZE = 80
SCALE_V2 = 2.7
SCALE_V1SE = 4.0
REAL_CLASS = 1


def dynamic_model_bytes(path: str | Path) -> bytes:
    """The ONNX graph with a free batch axis (see the module docstring)."""
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if init.name.endswith("flatten/Constant_output_0") and array.tolist() == [1, -1]:
            init.CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), init.name))
    del model.graph.value_info[:]  # shapes recorded for batch 1; onnxruntime re-infers them
    return model.SerializeToString()


def crop_box(image_w: int, image_h: int, box: np.ndarray, scale: float) -> tuple[int, int, int, int]:
    """Inclusive pixel box (x1, y1, x2, y2) of the liveness crop for a face box (x1, y1, x2, y2)."""
    x, y = float(box[0]), float(box[1])
    box_w, box_h = max(float(box[2] - box[0]), 1.0), max(float(box[3] - box[1]), 1.0)
    scale = min((image_h - 1) / box_h, (image_w - 1) / box_w, scale)
    cx, cy = x + box_w / 2, y + box_h / 2
    left, top = cx - box_w * scale / 2, cy - box_h * scale / 2
    right, bottom = cx + box_w * scale / 2, cy + box_h * scale / 2
    # Shift, don't cut: a box past an edge slides back inside with its size kept.
    if left < 0:
        right -= left
        left = 0.0
    if top < 0:
        bottom -= top
        top = 0.0
    if right > image_w - 1:
        left -= right - (image_w - 1)
        right = image_w - 1
    if bottom > image_h - 1:
        top -= bottom - (image_h - 1)
        bottom = image_h - 1
    return int(left), int(top), int(right), int(bottom)


def resize_bilinear(patch: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) -> (size, size, C) float32, bilinear with half-pixel centres and edge clamping."""
    h, w = patch.shape[:2]

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(size) + 0.5) * (n / size) - 0.5
        src = np.clip(src, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    p = patch.astype(np.float32)
    top = p[y0][:, x0] * (1 - fx)[None, :, None] + p[y0][:, x1] * fx[None, :, None]
    bottom = p[y1][:, x0] * (1 - fx)[None, :, None] + p[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def crops(image: np.ndarray, boxes: np.ndarray, scale: float) -> np.ndarray:
    """(N, 3, 80, 80) BGR float32 network input for the faces of one RGB uint8 image."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for i, box in enumerate(np.asarray(boxes, np.float64)):
        x1, y1, x2, y2 = crop_box(w, h, box, scale)
        patch = image[y1 : y2 + 1, x1 : x2 + 1, ::-1]  # RGB -> BGR
        out[i] = resize_bilinear(patch, INPUT_SIZE).transpose(2, 0, 1)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class PassiveLiveness:
    model_id = "minifasnet-v2+v1se"

    def __init__(self, v2: ort.InferenceSession, v1se: ort.InferenceSession) -> None:
        self.models = ((v2, SCALE_V2), (v1se, SCALE_V1SE))
        for session, _ in self.models:
            shape = session.get_inputs()[0].shape
            if list(shape[1:]) != [3, INPUT_SIZE, INPUT_SIZE]:
                raise ValueError(f"not a MiniFASNet 80x80 graph: input shape {shape}")

    @classmethod
    def from_files(
        cls,
        v2_path: str | Path,
        v1se_path: str | Path,
        session_factory: Callable[[bytes], ort.InferenceSession] | None = None,
    ) -> PassiveLiveness:
        factory = session_factory if session_factory is not None else create_session
        return cls(factory(dynamic_model_bytes(v2_path)), factory(dynamic_model_bytes(v1se_path)))

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Real-face probability (N,) for face boxes (N, 4: x1, y1, x2, y2) of one RGB uint8 image."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros(0, np.float32)
        probs = np.zeros((len(boxes), 3), np.float64)
        for session, scale in self.models:
            batch = crops(image, boxes, scale)
            (logits,) = session.run(None, {session.get_inputs()[0].name: batch})
            probs += _softmax(np.asarray(logits, np.float64))
        return (probs[:, REAL_CLASS] / len(self.models)).astype(np.float32)
