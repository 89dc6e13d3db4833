"""YuNet face detector (face_detection_yunet_2023mar.onnx): boxes, scores and 5 points.

The shipped graph has a fixed 1x3x640x640 input, but its only hard-coded shapes are the output Reshapes
([1, -1, k]); with those set to [0, -1, k] (0 = keep the batch dim) the graph runs on any batch and any
size that is a multiple of 32. Outputs are decoded in numpy as OpenCV's FaceDetectorYN does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from PIL import Image

STRIDES = (8, 16, 32)
DIVISOR = 32


@dataclass
class Detections:
    """Faces of one image, best score first. Coordinates are pixels of the input image."""

    boxes: np.ndarray  # (K, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (K,) float32
    landmarks: np.ndarray  # (K, 5, 2) float32: right eye, left eye, nose tip, right mouth, left mouth

    def __len__(self) -> int:
        return len(self.scores)


def make_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Free the batch and spatial dims of the YuNet graph (edits a copy)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    shape_inputs = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in shape_inputs:
            shape = numpy_helper.to_array(init).copy()
            if shape[0] != 1 or shape[1] != -1:
                raise ValueError(f"unexpected YuNet reshape target {shape.tolist()}")
            shape[0] = 0  # copy the batch dim from the input tensor
            init.CopyFrom(numpy_helper.from_array(shape, init.name))
    dims = graph.input[0].type.tensor_type.shape.dim
    for dim, name in zip(dims, ("batch", None, "height", "width"), strict=True):
        if name:
            dim.ClearField("dim_value")
            dim.dim_param = name
    for output in graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = "batch"
        output.type.tensor_type.shape.dim[1].dim_param = f"anchors_{output.name}"
    del graph.value_info[:]
    return model_copy


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class YuNet:
    model_id = "yunet_2023mar"

    def __init__(
        self,
        session: ort.InferenceSession,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        min_face_size: float = 0.0,
    ) -> None:
        self.session = session
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side  # larger images are downscaled to this long side, boxes mapped back
        self.min_face_size = min_face_size  # shorter box side in pixels of the original image
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]

    @staticmethod
    def dynamic_model_bytes(path: str | Path) -> bytes:
        return make_dynamic(onnx.load(str(path))).SerializeToString()

    def _resize(self, image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=3.0))
            # Map back with the exact per-axis ratio of the rounded size (mean of both axes).
            scale = (size[0] / w + size[1] / h) / 2
        return image, scale

    def input_size(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(height, width) of the network input for an image of this shape: downscaled, padded to 32."""
        h, w = shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
        return -(-h // DIVISOR) * DIVISOR, -(-w // DIVISOR) * DIVISOR

    def forward(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for a (N, 3, H, W) BGR float32 batch; H and W multiples of 32."""
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))

    def detect(self, image: np.ndarray) -> Detections:
        """Faces in one RGB uint8 (H, W, 3) image."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray], max_side: int | None = None) -> list[Detections]:
        """Faces in several RGB uint8 images, run as one batch (padded bottom/right to a common size).

        max_side: long side the images are downscaled to (default `self.max_side`)."""
        resized = [self._resize(im, max_side or self.max_side) for im in images]
        height = max(im.shape[0] for im, _ in resized)
        width = max(im.shape[1] for im, _ in resized)
        height = -(-height // DIVISOR) * DIVISOR
        width = -(-width // DIVISOR) * DIVISOR
        batch = np.zeros((len(images), 3, height, width), np.float32)
        for i, (im, _) in enumerate(resized):
            # RGB -> BGR, HWC -> CHW; the network takes raw 0..255 values.
            batch[i, :, : im.shape[0], : im.shape[1]] = im[:, :, ::-1].transpose(2, 0, 1)
        out = self.forward(batch)
        return [self._decode(out, i, height, width, scale) for i, (_, scale) in enumerate(resized)]

    def _decode(
        self, out: dict[str, np.ndarray], i: int, height: int, width: int, scale: float
    ) -> Detections:
        boxes, scores, kps = [], [], []
        for stride in STRIDES:
            cols = width // stride
            rows = height // stride
            cls = np.clip(out[f"cls_{stride}"][i, :, 0], 0, 1)
            obj = np.clip(out[f"obj_{stride}"][i, :, 0], 0, 1)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            r, c = np.divmod(keep, cols)
            assert rows * cols == out[f"cls_{stride}"].shape[1]
            bbox = out[f"bbox_{stride}"][i, keep]
            cx = (c + bbox[:, 0]) * stride
            cy = (r + bbox[:, 1]) * stride
            w = np.exp(bbox[:, 2]) * stride
            h = np.exp(bbox[:, 3]) * stride
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
            pts = out[f"kps_{stride}"][i, keep].reshape(-1, 5, 2)
            kps.append((pts + np.stack([c, r], axis=1)[:, None, :]) * stride)
            scores.append(score[keep])
        if not scores:
            return Detections(
                np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
            )
        all_boxes = np.concatenate(boxes) / scale
        all_scores = np.concatenate(scores)
        all_kps = np.concatenate(kps) / scale
        kept = nms(all_boxes, all_scores, self.nms_threshold)
        all_boxes, all_scores, all_kps = all_boxes[kept], all_scores[kept], all_kps[kept]
        if self.min_face_size > 0:
            sides = np.minimum(all_boxes[:, 2] - all_boxes[:, 0], all_boxes[:, 3] - all_boxes[:, 1])
            big = sides >= self.min_face_size
            all_boxes, all_scores, all_kps = all_boxes[big], all_scores[big], all_kps[big]
        return Detections(
            all_boxes.astype(np.float32), all_scores.astype(np.float32), all_kps.astype(np.float32)
        )
