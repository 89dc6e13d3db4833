"""MediaPipe iris landmarks: 71 eye-contour/brow points and 5 iris points from a 64x64 eye crop
(iris_landmark.tflite, converted to ONNX).

Preprocessing is MediaPipe's iris_landmark graph: RGB, float32 in [0, 1]. Outputs are in crop pixels
(pixel-index convention, see workers.models.face_mesh); iris points are the centre, then four points on
the iris edge; contour points follow MediaPipe's order (lower lid from the outer corner, upper lid, then
halos and brow).

Mirroring convention. The network was trained on one eye: the eye whose corners are face-mesh points
33 (outer) and 133 (inner), i.e. the subject's right eye, which sits on the image's left in a
non-mirrored frontal photo (MediaPipe calls it "left" because it reasons in selfie view). The other
eye (mesh points 362 inner, 263 outer) must be mirrored before the network and its answers mirrored
back. `IrisLandmarks.predict` does both when told which crops show that eye (`mirror`), so callers
always pass crops as cut from the image and always get points in the pixel frame of the crop they
passed. After un-mirroring, contour point 0 of the subject's left eye is its outer corner (near mesh
263), as contour point 0 of the subject's right eye is near mesh 33.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from workers.models.face_mesh import rois_from_segment
from workers.models.runtime import OnnxModel

NUM_CONTOUR = 71
NUM_IRIS = 5
EYE_ROI_SCALE = 2.3  # MediaPipe: eye-corner segment -> iris ROI
# Face-mesh corner points, each pair ordered image-left to image-right (the ROI rotation follows it):
# subject's right eye (outer 33, inner 133), subject's left eye (inner 362, outer 263).
EYE_CORNERS = ((33, 133), (362, 263))
EYE_MIRROR = (False, True)  # the subject's left eye is mirrored before the network


def eye_rois(mesh: np.ndarray, scale: float = EYE_ROI_SCALE) -> np.ndarray:
    """Eye crop ROIs (N, 2, 4) from face-mesh points in image pixels (N, 468, 2 or 3).

    [:, 0] is the subject's right eye, [:, 1] the subject's left eye; pass `EYE_MIRROR` along with them.
    """
    mesh = np.asarray(mesh, np.float64)
    rois = [rois_from_segment(mesh[:, a, :2], mesh[:, b, :2], scale) for a, b in EYE_CORNERS]
    return np.stack(rois, axis=1)


class IrisLandmarks(OnnxModel):
    """Eye contour + iris points over batches of 64x64 RGB eye crops."""

    input_size = 64

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        outputs = [o.name for o in session.get_outputs()]
        if outputs != ["eye_contour", "iris"]:
            raise ValueError(f"not an iris landmark graph: outputs {outputs}")

    def predict(
        self, eye_crops: np.ndarray, mirror: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """eye_crops (N, 64, 64, 3) uint8 RGB -> eye_contour (N, 71, 3), iris (N, 5, 3) in crop pixels.

        mirror (N,) bool: crops of the subject's left eye, mirrored for the network and back after.
        """
        crops = np.asarray(eye_crops)
        n, size = len(crops), self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"expected (N, 64, 64, 3) crops, got {crops.shape}")
        flip = np.zeros(n, bool) if mirror is None else np.asarray(mirror, bool).reshape(n)
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        x[flip] = x[flip, :, :, ::-1]
        contour, iris = self.session.run(None, {self.input_name: x})
        contour, iris = contour.reshape(n, NUM_CONTOUR, 3), iris.reshape(n, NUM_IRIS, 3)
        for points in (contour, iris):
            # Mirror x back in the network's continuous coordinates (x -> size - x), then shift to the
            # pixel-index convention (see workers.models.face_mesh).
            points[flip, :, 0] = size - points[flip, :, 0]
            points[..., :2] -= 0.5
        return contour, iris
