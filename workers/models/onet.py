"""MTCNN's O-Net (Zhang et al. 2016, facenet-pytorch's weights) as a human-face verifier, run as ONNX.

O-Net is MTCNN's last stage: a small classifier (48x48 RGB) trained to tell faces (WIDER FACE) from
non-faces, which our detector's second look asks about every detection. The graph comes from
`workers.models.convert.mtcnn_onet` and matches facenet-pytorch's torch forward pass
(tests/unit/test_onet.py). `crop_chips` cuts the crop the way MTCNN feeds O-Net: the box made square
around its centre (`rerec`), black outside the image, area-resampled to 48x48.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from PIL import Image

from workers.models.runtime import OnnxModel, check_chips


def square_boxes(boxes: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> integer squares of side max(w, h) * scale on the same centres (MTCNN's rerec)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale
    side = np.maximum(side, 1.0)
    corner = np.round(centre - side[:, None] / 2)
    return np.column_stack([corner, corner + np.round(side)[:, None]]).astype(np.int64)


def crop_chips(
    image: np.ndarray, boxes: np.ndarray, size: int = 48, scales: tuple[float, ...] = (1.0,)
) -> np.ndarray:
    """(len(scales) * N, size, size, 3) uint8 chips of an RGB uint8 image, scale by scale: each box
    squared at that scale, out-of-image parts black, area-resampled (MTCNN resamples with
    `interpolate(mode="area")` / cv2.INTER_AREA). The image is converted once for every scale."""
    pil = Image.fromarray(np.asarray(image, np.uint8))
    squares = [square for scale in scales for square in square_boxes(boxes, scale)]
    chips = np.empty((len(squares), size, size, 3), np.uint8)
    for i, box in enumerate(squares):
        # PIL fills the parts of a crop outside the image with black, as MTCNN's pad() does.
        chips[i] = np.asarray(pil.crop(tuple(int(v) for v in box)).resize((size, size), Image.Resampling.BOX))
    return chips


class ONet(OnnxModel):
    model_id = "mtcnn-onet"
    chip_size = 48

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        outputs = [o.name for o in session.get_outputs()]
        if outputs != ["prob", "box", "points"]:
            raise ValueError(f"not the MTCNN O-Net graph: outputs {outputs}")

    def run(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 48, 48, 3) uint8 RGB chips -> prob (N, 2), box (N, 4), points (N, 10), all float32."""
        chips = check_chips(chips, self.chip_size)
        if len(chips) == 0:
            return np.zeros((0, 2), np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 10), np.float32)
        prob, box, points = self.session.run(
            None, {self.input_name: chips.transpose(0, 3, 1, 2).astype(np.float32)}
        )
        return prob, box, points

    def face_probability(self, chips: np.ndarray) -> np.ndarray:
        """(N,) float32: O-Net's probability that each chip is a face."""
        return self.run(chips)[0][:, 1]
