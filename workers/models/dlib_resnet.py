"""dlib's ResNet face descriptor (dlib_face_recognition_resnet_model_v1), run as ONNX.

The ONNX graph comes from `workers.models.convert.dlib_dnn` and matches dlib's own
`face_recognition_model_v1.compute_face_descriptor` on the same chip (see tests/unit/test_dlib_parity.py).

Descriptors: `embed` returns dlib's raw 128-D vector, which dlib compares by Euclidean distance with
0.6 as its same-person threshold (the vectors are not unit length, their norms vary around 1.4), so
that is the form to keep for dlib-compatible scores. `embed_normalized` returns the same vectors scaled
to unit length, for cosine / inner-product search indexes and fusion with other unit-length embeddings;
distances there are on a different scale, so thresholds must be calibrated for that form.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from workers.models.runtime import OnnxModel, check_chips


class DlibResNetEmbedder(OnnxModel):
    model_id = "dlib-resnet-v1"
    chip_size = 150
    dim = 128
    same_person_distance = 0.6  # dlib's threshold, raw descriptors, Euclidean distance
    # Where the 5 points (subject's right eye, left eye, nose tip, right and left mouth corner, as YuNet
    # gives them) fall on a 150x150 chip made the way dlib.get_face_chip(img, shape, 150, 0.25) makes it.
    template = np.array(
        [
            [45.97, 44.40],
            [103.42, 45.25],
            [74.87, 77.79],
            [50.42, 102.89],
            [98.98, 103.37],
        ],
        dtype=np.float32,
    )

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [3, self.chip_size, self.chip_size]:
            raise ValueError(f"not a dlib ResNet descriptor graph: input shape {shape}")

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips → (N, 128) float32 raw dlib descriptors."""
        chips = check_chips(chips, self.chip_size)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        # The graph itself subtracts dlib's mean colour and divides by 256.
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def embed_normalized(self, chips: np.ndarray) -> np.ndarray:
        """Unit-length descriptors, for inner-product search (see the module docstring)."""
        return l2_normalize(self.embed(chips))


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
