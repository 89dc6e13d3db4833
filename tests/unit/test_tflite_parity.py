"""Converted MediaPipe face mesh and iris graphs against the TFLite interpreter (ai-edge-litert) on real
face crops: glint_celeb and UTKFace faces for the mesh, eye crops cut from them for the iris model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.models.face_mesh import FaceMesh, warp_crops
from workers.models.iris import EYE_MIRROR, IrisLandmarks, eye_rois

litert = pytest.importorskip("ai_edge_litert.interpreter")

pytestmark = [pytest.mark.peers, pytest.mark.models, requires_shared_data]

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _model_path(name: str) -> Path:
    from workers.models.fetch import model_path

    return model_path(name)


def _source(name: str) -> Path:
    from workers.models.fetch import fetch_source

    return fetch_source(name)


def _tflite(name: str, x: np.ndarray) -> list[np.ndarray]:
    """Run the original .tflite one image at a time (NHWC float32), outputs concatenated over the batch."""
    interp = litert.Interpreter(model_path=str(_source(name)), num_threads=1)
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    outs = []
    for image in x:
        interp.set_tensor(index, image[None])
        interp.invoke()
        outs.append([interp.get_tensor(o["index"]).copy() for o in interp.get_output_details()])
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


@pytest.fixture(scope="module")
def face_crops() -> np.ndarray:
    """8 glint_celeb (112x112) + 8 UTKFace (200x200) aligned faces, whole, resized to 192x192."""
    glint = sorted((DATA / "identity" / "glint_celeb").glob("*/*.png"))[::45][:8]
    utk = sorted((DATA / "age_gender" / "utkface").glob("*.jpg"))[::180][:8]
    crops = [Image.open(p).convert("RGB").resize((192, 192), Image.Resampling.BILINEAR) for p in glint]
    crops += [Image.open(p).convert("RGB").resize((192, 192), Image.Resampling.BILINEAR) for p in utk]
    assert len(crops) == 16
    return np.stack([np.asarray(c) for c in crops])


def test_face_mesh_matches_tflite(face_crops: np.ndarray) -> None:
    mesh = FaceMesh.from_file(_model_path("face_landmark"))
    landmarks, score = mesh.predict(face_crops)

    x = face_crops.astype(np.float32) * np.float32(1 / 255)  # the same [0, 1] input, NHWC
    ref_landmarks, ref_flag = _tflite("face_landmark", x)
    ref_landmarks = ref_landmarks.reshape(-1, 468, 3)
    ref_landmarks[..., :2] -= 0.5  # the wrapper's pixel-index convention
    ref_score = 1 / (1 + np.exp(-ref_flag.reshape(-1).astype(np.float64)))

    diff = np.abs(landmarks - ref_landmarks).max()
    score_diff = np.abs(score - ref_score).max()
    print(f"face mesh parity: {len(x)} crops, max |d landmark| {diff:.2e} px, max |d score| {score_diff:.2e}")
    assert diff < 0.01
    assert score_diff < 1e-4
    assert ref_score.min() > 0.5  # real faces: the comparison is on meaningful outputs


def test_iris_matches_tflite(face_crops: np.ndarray) -> None:
    mesh = FaceMesh.from_file(_model_path("face_landmark"))
    landmarks, _ = mesh.predict(face_crops)
    rois = eye_rois(landmarks).reshape(-1, 4)  # the 192 crop plays the image; 2 eyes per face
    sources = np.repeat(np.arange(len(face_crops)), 2)
    eyes = np.concatenate([warp_crops(face_crops[i], rois[k : k + 1], 64) for k, i in enumerate(sources)])
    mirror = np.tile(EYE_MIRROR, len(face_crops))

    iris_model = IrisLandmarks.from_file(_model_path("iris_landmark"))
    contour, iris = iris_model.predict(eyes, mirror)

    x = eyes.astype(np.float32) * np.float32(1 / 255)
    x[mirror] = x[mirror, :, ::-1]  # MediaPipe flips the subject's left eye before the network
    ref_contour, ref_iris = (r.reshape(len(x), -1, 3) for r in _tflite("iris_landmark", x))
    for ref in (ref_contour, ref_iris):
        ref[mirror, :, 0] = 64 - ref[mirror, :, 0]  # and flips the answers back
        ref[..., :2] -= 0.5

    d_contour = np.abs(contour - ref_contour).max()
    d_iris = np.abs(iris - ref_iris).max()
    print(
        f"iris parity: {len(x)} eye crops, max |d contour| {d_contour:.2e} px, max |d iris| {d_iris:.2e} px"
    )
    assert d_contour < 0.01
    assert d_iris < 0.01
    # The eye crops really hold eyes: iris centres land inside the crop, near its middle.
    assert np.all(np.abs(iris[:, 0, :2] - 31.5) < 16)
