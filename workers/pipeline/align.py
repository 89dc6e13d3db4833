"""Face alignment: a similarity transform from 5 points to a template, and a batched warp to chips.

Coordinates use the pixel-index convention: the centre of pixel (i, j) is at x = j, y = i.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# YuNet's 5 points (right eye, left eye, nose tip, right mouth corner, left mouth corner, image order) in
# the unit frame of dlib's face chips (get_face_chip_details with padding 0 maps this frame to [0, 1]).
# Fitted as the mean of YuNet's points mapped through dlib's own 5-point chip transform (dlib-bin HOG +
# shape_predictor_5) on 398 cacd_vs and 148 FG-NET photos, mirrored to be left-right symmetric like
# dlib's template; tests/unit/test_align.py re-fits it. Chips that must match dlib's geometry use it:
# dlib ResNet (150 px, padding 0.25) and the age/gender networks (padding 0.2).
DLIB_UNIT_TEMPLATE = np.array(
    [
        [0.2232, 0.2031],
        [0.7768, 0.2031],
        [0.5000, 0.5259],
        [0.2604, 0.7566],
        [0.7396, 0.7566],
    ],
    dtype=np.float32,
)


def dlib_template(size: int, padding: float) -> np.ndarray:
    """DLIB_UNIT_TEMPLATE placed in a size x size chip with dlib's padding rule."""
    return ((DLIB_UNIT_TEMPLATE + padding) / (1 + 2 * padding) * size).astype(np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) taking src (K,2) onto dst (K,2).

    Returns the 2x3 matrix M with dst ~ M[:, :2] @ src + M[:, 2] (Umeyama 1991, no reflection).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (sigma * d).sum() / var_src
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def similarity_transforms(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(N,2,3) transforms taking each face's points (N,K,2) onto the template (K,2)."""
    return np.stack([umeyama(p, template) for p in points]) if len(points) else np.zeros((0, 2, 3))


def _inverse(matrix: np.ndarray) -> np.ndarray:
    a = matrix[:, :2]
    inv = np.linalg.inv(a)
    return np.concatenate([inv, -(inv @ matrix[:, 2])[:, None]], axis=1)


def warp_chip(image: Image.Image, matrix: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """One (size, size, 3) uint8 chip: chip pixel p samples the image at matrix^-1 p (bilinear).

    When the face is much larger than the chip the region is first box-reduced by an integer factor,
    as dlib does with its image pyramid, so that bilinear sampling does not alias. antialias=False
    samples the image directly, as OpenCV's warpAffine does (the chips SFace was trained on).
    """
    inv = _inverse(matrix)  # chip -> image
    scale = math.sqrt(abs(np.linalg.det(inv[:, :2])))  # image px per chip px
    factor = int(scale) if antialias and scale >= 2 else 1
    if factor > 1:
        corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], float)
        spots = corners @ inv.T
        x0, y0 = np.floor(spots.min(0)).astype(int) - 2 * factor
        x1, y1 = np.ceil(spots.max(0)).astype(int) + 2 * factor
        region = image.crop((x0, y0, x1, y1)).reduce(factor)
        # Reduced pixel q has its centre at image x = x0 + factor * q + (factor - 1) / 2.
        to_region = np.array([[1 / factor, 0, -(x0 + (factor - 1) / 2) / factor], [0, 1 / factor, 0]])
        to_region[1, 2] = -(y0 + (factor - 1) / 2) / factor
        inv = to_region[:, :2] @ inv
        inv[:, 2] += to_region[:, 2]
        image = region
    # Pillow samples the input at A (x + 0.5) + t in its own pixel-edge convention; shift into ours.
    a = inv[:, :2]
    t = inv[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    coeffs = (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])
    chip = image.transform((size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    return np.asarray(chip)


def warp_chips(
    image: np.ndarray | Image.Image, matrices: np.ndarray, size: int, antialias: bool = True
) -> np.ndarray:
    """(N, size, size, 3) uint8 chips of an RGB image, one per (2,3) image->chip matrix."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    out = np.zeros((len(matrices), size, size, 3), np.uint8)
    for i, matrix in enumerate(matrices):
        out[i] = warp_chip(pil, matrix, size, antialias)
    return out


def align(
    image: np.ndarray | Image.Image,
    points: np.ndarray,
    template: np.ndarray,
    size: int,
    antialias: bool = True,
) -> np.ndarray:
    """Chips (N, size, size, 3) for faces with 5 points (N,5,2), aligned on `template` (5,2) in chip px."""
    return warp_chips(image, similarity_transforms(points, template), size, antialias)


def eye_angle(points: np.ndarray) -> np.ndarray:
    """In-plane rotation in degrees of each face (N,5,2) from its eye line; positive = clockwise in the image."""
    d = points[:, 1] - points[:, 0]
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))
