"""Alignment: Umeyama recovers known transforms, the warp samples where it should, dlib's chip geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.photos import requires_shared_data
from workers.pipeline.align import (
    DLIB_UNIT_TEMPLATE,
    align,
    dlib_template,
    eye_angle,
    similarity_transforms,
    umeyama,
    warp_chip,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([rot, np.array(shift, float)[:, None]], axis=1)


def centred(angle_deg: float, scale: float, size: int, centre: tuple[float, float]) -> np.ndarray:
    """Image -> chip similarity putting image point `centre` at the chip's centre (chip inside the image)."""
    matrix = similarity(angle_deg, scale, (0, 0))
    matrix[:, 2] = (size - 1) / 2 - matrix[:, :2] @ np.array(centre, float)
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def bilinear_reference(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Plain numpy: chip pixel p takes the bilinear value of the image at matrix^-1 p (zeros outside)."""
    a_inv = np.linalg.inv(matrix[:, :2])
    yy, xx = np.mgrid[0:size, 0:size]
    chip_pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    src = (chip_pts - matrix[:, 2]) @ a_inv.T
    x0, y0 = np.floor(src[:, 0]).astype(int), np.floor(src[:, 1]).astype(int)
    fx, fy = src[:, 0] - x0, src[:, 1] - y0
    h, w = image.shape[:2]

    def at(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out = np.zeros((len(xi), 3))
        out[ok] = image[yi[ok], xi[ok]]
        return out

    value = (
        at(y0, x0) * ((1 - fx) * (1 - fy))[:, None]
        + at(y0, x0 + 1) * (fx * (1 - fy))[:, None]
        + at(y0 + 1, x0) * ((1 - fx) * fy)[:, None]
        + at(y0 + 1, x0 + 1) * (fx * fy)[:, None]
    )
    return value.reshape(size, size, 3)


def smooth_image(h: int, w: int, blur: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    img = np.asarray(noise.filter(ImageFilter.GaussianBlur(blur))).astype(float)
    return ((img - img.mean()) * 6 + 128).clip(0, 255).astype(np.uint8)  # restore contrast lost to blur


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0, 1, (0, 0)), (17, 1.3, (-50, 12.5)), (-40, 0.37, (8, -3)), (90, 2.0, (1, 2))],
)
def test_umeyama_recovers_known_similarity(angle: float, scale: float, shift: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    truth = similarity(angle, scale, shift)
    np.testing.assert_allclose(umeyama(src, apply(truth, src)), truth, atol=1e-9)
    # With noisy points it is the least-squares fit: close to the truth, residual no bigger than the truth's.
    noisy = apply(truth, src) + rng.normal(0, 0.5, (5, 2))
    fit = umeyama(src, noisy)
    assert np.abs(fit[:, :2] - truth[:, :2]).max() < 0.02 * scale + 0.01
    assert np.sum((apply(fit, src) - noisy) ** 2) <= np.sum((apply(truth, src) - noisy) ** 2) + 1e-9


def test_umeyama_never_reflects() -> None:
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 7]], float)
    mirrored = src * np.array([-1, 1])
    assert np.linalg.det(umeyama(src, mirrored)[:, :2]) > 0


@pytest.mark.parametrize(("angle", "scale"), [(0, 1.0), (17, 1.3), (-30, 0.8), (5, 0.6)])
def test_warp_samples_like_bilinear_reference(angle: float, scale: float) -> None:
    image = smooth_image(300, 400, 2)
    matrix = centred(angle, scale, 96, (210.3, 140.8))
    chip = warp_chip(Image.fromarray(image), matrix, 96).astype(float)
    want = bilinear_reference(image, matrix, 96)
    assert np.abs(chip - want).max() <= 1.0 + 1e-6  # Pillow rounds in fixed point


def test_warp_downscale_uses_box_reduction_without_shift() -> None:
    """A face 5x larger than the chip: reduced first (no aliasing), same geometry as direct sampling."""
    image = smooth_image(1200, 1600, 20)
    matrix = centred(25, 0.2, 112, (803.5, 590.2))
    chip = warp_chip(Image.fromarray(image), matrix, 112).astype(float)
    want = bilinear_reference(image, matrix, 112)
    error = np.abs(chip - want)
    # A shift of the sampling grid by a reduced pixel would show as gradient-sized errors; none here.
    assert error.mean() < 1.5 and error.max() < 8


def test_align_recovers_a_transformed_face() -> None:
    """Points moved by a known similarity: align maps them back onto the template."""
    template = dlib_template(64, 0.2)
    truth = similarity(-23, 1.7, (140, 90))  # chip -> image (under 2x: no box reduction)
    points = apply(truth, template)[None]
    (matrix,) = similarity_transforms(points, template)
    np.testing.assert_allclose(apply(matrix, points[0]), template, atol=1e-4)
    image = smooth_image(400, 400, 2)
    chips = align(image, np.repeat(points, 3, axis=0), template, 64)
    assert chips.shape == (3, 64, 64, 3) and chips.dtype == np.uint8
    inverse = np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2]
    want = bilinear_reference(image, inverse, 64)
    assert np.abs(chips[0].astype(float) - want).max() <= 1.0 + 1e-6


def test_eye_angle_sign() -> None:
    pts = np.zeros((2, 5, 2))
    pts[0, 1] = [10, 0]
    pts[1, 1] = [10, 10]
    np.testing.assert_allclose(eye_angle(pts), [0.0, 45.0])


def test_dlib_template_is_symmetric_and_inside_chip() -> None:
    t = dlib_template(150, 0.25)
    assert np.all((t > 0) & (t < 150))
    assert t[0, 0] + t[1, 0] == pytest.approx(150, abs=1e-3)
    assert t[0, 1] == pytest.approx(t[1, 1]) and t[3, 1] == pytest.approx(t[4, 1])


@requires_shared_data
@pytest.mark.models
@pytest.mark.peers
def test_unit_template_refits_against_dlib_chips() -> None:
    """YuNet's points mapped through dlib's own chip transform land on DLIB_UNIT_TEMPLATE on average."""
    dlib = pytest.importorskip("dlib")
    import onnxruntime as ort

    from workers.models.fetch import fetch_source, model_path
    from workers.models.yunet import YuNet

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(fetch_source("shape_predictor_5")))
    yunet = YuNet(
        ort.InferenceSession(
            YuNet.dynamic_model_bytes(model_path("yunet")), providers=["CPUExecutionProvider"]
        )
    )
    size = 200
    fitted = []
    for path in sorted((DATA / "identity" / "cacd_vs").glob("*_1.jpg"))[:40]:
        image = np.asarray(Image.open(path).convert("RGB"))
        found, ours = detector(image, 1), yunet.detect(image)
        if len(found) != 1 or len(ours) == 0:
            continue
        details = dlib.get_face_chip_details(predictor(image, found[0]), size, 0.0)
        # Chips of coordinate images tell where dlib samples each chip pixel.
        h, w = image.shape[:2]
        xs = dlib.extract_image_chip(np.tile(np.arange(w, dtype=np.float32), (h, 1)), details)
        ys = dlib.extract_image_chip(np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w)), details)
        grid_y, grid_x = np.mgrid[10 : size - 10 : 15, 10 : size - 10 : 15]
        image_pts = np.stack([xs[grid_y, grid_x].ravel(), ys[grid_y, grid_x].ravel()], 1)
        to_chip = umeyama(image_pts, np.stack([grid_x.ravel(), grid_y.ravel()], 1).astype(float))
        fitted.append(apply(to_chip, ours.landmarks[0]) / size)
    assert len(fitted) >= 30
    mean = np.mean(fitted, axis=0)
    mirrored = mean[[1, 0, 2, 4, 3]] * np.array([-1, 1]) + np.array([1, 0])
    symmetric = (mean + mirrored) / 2
    print("re-fitted unit template:", symmetric.round(4).tolist())
    assert np.abs(symmetric - DLIB_UNIT_TEMPLATE).max() < 0.02
