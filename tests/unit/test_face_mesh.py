"""Face mesh and iris wrappers: crop geometry, and accuracy against hand-made points on real photos.

FG-NET's 68 points are FG-NET's own scheme (not iBUG's): 27/29 outer/inner corner and 31 pupil of the
eye on the image's left, 32/34 outer/inner corner and 36 pupil of the other eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.models.face_mesh import FaceMesh, crop_to_image_affine, face_rois, points_to_image, warp_crops
from workers.models.iris import EYE_MIRROR, IrisLandmarks, eye_rois

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FGNET = DATA / "landmarks" / "fgnet"
# ArcFace's 112x112 template, which glint_celeb crops are aligned to: eye on the image's left, other eye.
ARCFACE_EYES = np.array([[38.2946, 51.6963], [73.5318, 51.5014]])


def _model_path(name: str) -> Path:
    from workers.models.fetch import model_path

    return model_path(name)


@pytest.mark.parametrize("angle", [0.0, 0.4, -1.0, 2.5])
def test_crop_geometry_round_trip(angle: float) -> None:
    """Dots cut out with a rotated ROI and mapped back land where they were (pixel-index convention)."""
    image = np.zeros((200, 300, 3), np.uint8)
    dots = np.array([[120.0, 80.0], [150.0, 95.0], [131.0, 60.0]])
    for x, y in dots.astype(int):
        image[y - 1 : y + 2, x - 1 : x + 2] = 255  # 3x3 blob centred on pixel (x, y)
    roi = np.array([[135.3, 77.7, 90.0, angle]])
    crop = warp_crops(image, roi, 192)[0, :, :, 0].astype(np.float64)
    to_crop = np.linalg.inv(np.vstack([crop_to_image_affine(roi, 192)[0], [0, 0, 1]]))
    ys, xs = np.mgrid[0:192, 0:192]
    for dot in dots:
        guess = to_crop[:2, :2] @ dot + to_crop[:2, 2]
        weight = crop * (np.hypot(xs - guess[0], ys - guess[1]) < 9)
        found = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        back = points_to_image(found[None, None], roi, 192)[0, 0]
        assert np.abs(back - dot).max() < 0.05


def test_face_rois() -> None:
    boxes = np.array([[10, 20, 110, 140], [0, 0, 50, 40]])
    eyes = np.array([[[40, 60], [80, 60]], [[10, 10], [30, 30]]])  # level; tilted down to the right
    rois = face_rois(boxes, eyes)
    np.testing.assert_allclose(rois[:, :2], [[60, 80], [25, 20]])
    np.testing.assert_allclose(rois[:, 2], [120 * 1.5, 50 * 1.5])
    np.testing.assert_allclose(rois[:, 3], [0, np.pi / 4])


@requires_shared_data
@pytest.mark.models
def test_mesh_on_aligned_faces() -> None:
    """On glint_celeb crops (aligned to the ArcFace template) the mesh's eye centres sit on the template."""
    paths = sorted((DATA / "identity" / "glint_celeb").glob("*/*.png"))[::30][:12]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    rois = np.tile([[55.5, 55.5, 150.0, 0.0]], (len(images), 1))  # the face with MediaPipe-like margins
    crops = np.concatenate([warp_crops(im, r[None], 192) for im, r in zip(images, rois, strict=True)])
    landmarks, score = FaceMesh.from_file(_model_path("face_landmark")).predict(crops)
    assert landmarks.shape == (len(images), 468, 3) and score.shape == (len(images),)
    assert score.min() > 0.9
    points = points_to_image(landmarks, rois, 192)
    eyes = np.stack([points[:, [33, 133]].mean(1), points[:, [362, 263]].mean(1)], axis=1)[..., :2]
    err = np.linalg.norm(eyes - ARCFACE_EYES, axis=2)
    print(
        f"glint eye centres vs ArcFace template: mean {err.mean():.2f} px, max {err.max():.2f} px (112 px faces)"
    )
    assert err.mean() < 4.0  # pose moves the eyes off the 5-point fit; 4 px is ~11% of the eye distance


def _fgnet(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for pts in sorted((FGNET / "points").glob("*.pts"))[:: 300 // count][:count]:
        body = pts.read_text().split("{")[1].split("}")[0]
        points = np.array([line.split() for line in body.split("\n") if line.strip()], np.float64)
        name = pts.stem.upper()  # 001a08 -> 001A08.JPG, 035a23a -> 035A23a.JPG
        name = name[:4] + pts.stem[4:]
        out.append((np.asarray(Image.open(FGNET / "images" / f"{name}.JPG").convert("RGB")), points))
    return out


@requires_shared_data
@pytest.mark.models
def test_mesh_and_iris_on_fgnet() -> None:
    """Mesh eye corners and iris centres against FG-NET's hand-made points; the eye-mirroring convention."""
    mesh_model = FaceMesh.from_file(_model_path("face_landmark"))
    iris_model = IrisLandmarks.from_file(_model_path("iris_landmark"))
    corner_err, pupil_err = [], []
    for image, truth in _fgnet(20):
        pupils = truth[[31, 36]]
        iod = np.linalg.norm(pupils[1] - pupils[0])
        box = np.r_[truth.min(0), truth.max(0)]
        rois = face_rois(box[None], pupils[None], scale=1.3)  # the 68-point box is larger than BlazeFace's
        landmarks, score = mesh_model.predict(warp_crops(image, rois, 192))
        assert score[0] > 0.5
        mesh = points_to_image(landmarks, rois, 192)[0]
        corner_err.append(
            np.linalg.norm(mesh[[33, 133, 362, 263], :2] - truth[[27, 29, 34, 32]], axis=1) / iod
        )

        eye = eye_rois(mesh[None])[0]
        crops = np.concatenate([warp_crops(image, eye[k : k + 1], 64) for k in range(2)])
        contour, iris = iris_model.predict(crops, np.array(EYE_MIRROR))
        contour = np.concatenate([points_to_image(contour[k : k + 1], eye[k : k + 1], 64) for k in range(2)])
        iris = np.concatenate([points_to_image(iris[k : k + 1], eye[k : k + 1], 64) for k in range(2)])
        pupil_err.append(np.linalg.norm(iris[:, 0, :2] - pupils, axis=1) / iod)
        # Contour point 0 is each eye's outer corner, point 8 its inner one, once the mirrored eye is
        # mapped back: mesh 33/133 for the subject's right eye, 263/362 for the left.
        for k, (outer, inner) in enumerate([(33, 133), (263, 362)]):
            d_outer = np.linalg.norm(contour[k, 0, :2] - mesh[outer, :2])
            d_inner = np.linalg.norm(contour[k, 0, :2] - mesh[inner, :2])
            assert d_outer < 0.15 * iod < d_inner
            assert np.linalg.norm(contour[k, 8, :2] - mesh[inner, :2]) < 0.15 * iod
    corner, pupil = np.mean(corner_err), np.mean(pupil_err)
    print(
        f"FG-NET (20 photos), error / inter-pupil distance: mesh eye corners {corner:.4f}, iris centres {pupil:.4f}"
    )
    assert corner < 0.06
    assert pupil < 0.03
