"""SFace: our fp32 conversion and RGB chips against OpenCV's FaceRecognizerSF and the shipped int8 file.

Real faces from the free photos (tests/photos.py), so this runs on any machine. OpenCV
(opencv-python-headless, a test dependency) is the reference: `alignCrop` makes the chip from YuNet's
5 points, `feature` runs the network on it (OpenCV loads the int8 file as shipped and swaps BGR to RGB
itself). The int8 reference for the conversion is the shipped file with only its dangling inputs dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.photos import astronaut, group, hopper
from workers.models.convert.onnx_int8bq import convert, drop_dangling_inputs
from workers.models.fetch import fetch_source, model_path
from workers.models.registry import get_spec
from workers.models.runtime import create_session
from workers.models.sface import SFaceEmbedder
from workers.models.yunet import YuNet
from workers.pipeline.align import align

pytestmark = pytest.mark.models


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _session(model: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rgb image, YuNet row for OpenCV, landmarks5) per face of the free photos (4 faces)."""
    detector = YuNet(create_session(YuNet.dynamic_model_bytes(model_path("yunet"))))
    out = []
    for image in (astronaut(), hopper(), group()):
        det = detector.detect(image)
        for box, score, points in zip(det.boxes, det.scores, det.landmarks, strict=True):
            x1, y1, x2, y2 = box
            row = np.concatenate([[x1, y1, x2 - x1, y2 - y1], points.ravel(), [score]]).astype(np.float32)
            out.append((image, row, points))
    assert len(out) == 4, f"expected 4 faces in the free photos, found {len(out)}"
    return out


@pytest.fixture(scope="module")
def opencv_sf(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - cv2 types
    cv2 = pytest.importorskip(
        "cv2", reason="opencv-python-headless is a test dependency (pip install -e .[test])"
    )
    # OpenCV 5 also trips over the dangling inputs; it gets the int8 file with only those dropped.
    path = tmp_path_factory.mktemp("sface") / "sface_int8.onnx"
    onnx.save(drop_dangling_inputs(onnx.load(str(fetch_source("sface")))), str(path))
    return cv2, cv2.FaceRecognizerSF.create(str(path), "")


@pytest.fixture(scope="module")
def embedder() -> SFaceEmbedder:
    return SFaceEmbedder(_session(model_path("sface")))


def test_conversion_drops_dangling_inputs_and_frees_the_batch(tmp_path: Path) -> None:
    dst = tmp_path / "sface.onnx"
    convert(fetch_source("sface"), dst)
    model = onnx.load(str(dst))
    assert [i.name for i in model.graph.input] == ["data"]
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == get_spec("sface").sha256
    x = np.random.default_rng(0).uniform(0, 255, (3, 112, 112, 3)).astype(np.uint8)
    model_one = SFaceEmbedder(_session(dst))
    batch = model_one.embed(x)
    single = np.concatenate([model_one.embed(x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_fp32_matches_the_int8_file(faces: list, embedder: SFaceEmbedder) -> None:
    shipped = drop_dangling_inputs(onnx.load(str(fetch_source("sface"))))
    int8 = _session(shipped.SerializeToString())
    chips = np.stack(
        [align(img, pts[None], SFaceEmbedder.template, 112, antialias=False)[0] for img, _, pts in faces]
    )
    ours = embedder.embed(chips)
    x = chips.transpose(0, 3, 1, 2).astype(np.float32)
    reference = np.concatenate([int8.run(None, {"data": x[i : i + 1]})[0] for i in range(len(x))])
    cosine = (ours * _unit(reference)).sum(1)
    assert cosine.min() >= 0.9999, cosine


def test_matches_opencv_on_its_own_chips(faces: list, opencv_sf, embedder: SFaceEmbedder) -> None:
    """OpenCV's alignCrop chip (BGR) through OpenCV's feature vs the same chip as RGB through ours."""
    cv2, recognizer = opencv_sf
    rgb_cos, bgr_cos = [], []
    for image, row, _ in faces:
        bgr = np.ascontiguousarray(image[..., ::-1])
        chip_bgr = recognizer.alignCrop(bgr, row)
        reference = _unit(recognizer.feature(chip_bgr).ravel())
        rgb_cos.append(float(embedder.embed(chip_bgr[None, ..., ::-1].copy())[0] @ reference))
        bgr_cos.append(float(embedder.embed(chip_bgr[None].copy())[0] @ reference))
        # OpenCV's own cosine match agrees with ours on the same vectors.
        same = recognizer.match(recognizer.feature(chip_bgr), recognizer.feature(chip_bgr), 0)
        assert same == pytest.approx(1.0, abs=1e-5)
    assert min(rgb_cos) >= 0.9999, rgb_cos
    # Feeding BGR (as some wrappers do) is measurably a different input: the network expects RGB.
    assert max(bgr_cos) < 0.99, bgr_cos


def test_our_alignment_matches_alignCrop(faces: list, opencv_sf, embedder: SFaceEmbedder) -> None:  # noqa: N802
    """Our chip (pipeline alignment) vs OpenCV's alignCrop from the same 5 points: pixels and embeddings."""
    cv2, recognizer = opencv_sf
    for image, row, points in faces:
        ours = align(image, points[None], SFaceEmbedder.template, 112, SFaceEmbedder.antialias)[0]
        theirs = recognizer.alignCrop(np.ascontiguousarray(image[..., ::-1]), row)[..., ::-1]
        # Same transform; only the interpolation's rounding differs (OpenCV uses 5-bit fixed point).
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert diff.mean() < 1.0, diff.mean()
        reference = _unit(recognizer.feature(np.ascontiguousarray(theirs[..., ::-1])).ravel())
        cosine = float(embedder.embed(ours[None])[0] @ reference)
        assert cosine >= 0.999, cosine


def test_same_person_closer_than_different(faces: list, embedder: SFaceEmbedder) -> None:
    """The astronaut alone and in the group photo are one person; Hopper is another."""
    chips = np.stack(
        [align(img, pts[None], SFaceEmbedder.template, 112, antialias=False)[0] for img, _, pts in faces]
    )
    v = embedder.embed(chips)
    # faces: astronaut, hopper, then the group photo's two faces (best score first: either order).
    group_astronaut = 2 + int(np.argmax(v[2:] @ v[0]))
    group_hopper = 5 - group_astronaut
    assert v[0] @ v[group_astronaut] > 0.9
    assert v[1] @ v[group_hopper] > 0.9
    assert v[0] @ v[1] < 0.4
