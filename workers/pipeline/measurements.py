"""Betaface's `extended` geometric measurements from the dense landmarks of one face.

Every measurement is a ratio of two lengths taken in the eye-aligned frame: origin at the midpoint of the
iris centres, x along the line from the subject's right iris to the subject's left iris, y perpendicular
(downward on an upright face). Lengths in that frame do not change when the image is rotated in plane or
scaled, so neither do the ratios. "x(v)" / "y(v)" below are a point's coordinates in that frame; paired
vertices are given as subject-left/subject-right (MediaPipe's canonical mesh is symmetric); paired
measurements are the mean of both sides. Eye points c0 (outer corner), c8 (inner), c12 (top), c4
(bottom) are the iris network's eye contour, irisR/irisL its iris centres, the rest are mesh vertices.

Shared lengths: face width W = |x(454) - x(234)| (oval at ear level); face height H = y(152) - y(10)
(chin bottom - mesh top, which sits below the hairline); eye width E = |x(c0) - x(c8)|;
mouth width M = |x(291) - x(61)|.

| tag | ratio | points |
| --- | --- | --- |
| eyes distance | (x(irisL) - x(irisR)) / W | iris centres, 454/234 |
| eyes position | (y(152) - y(eye corners)) / H: share of the face height below the eye line | c0, c8, 152, 10 |
| nose width | |x(358) - x(129)| / W (alae, their most lateral vertices) | 358/129, 454/234 |
| mouth width | M / W | 291/61, 454/234 |
| mouth height | ((y(13) - y(0)) + (y(17) - y(14))) / M: both lips' thickness, mouth gap left out | 0, 13, 14, 17 |
| head width | W / H | 454/234, 10, 152 |
| chin size | (y(152) - y(17)) / H: lower lip to chin bottom | 17, 152, 10 |
| eyebrows position | (y(eye corners) - y(brow middle)) / H; brow middle = mean(334, 282 / 105, 52) | c0, c8 |
| eyebrows size | mean of y(lower) - y(upper) over brow pairs 293-283, 334-282, 296-295 / 63-53, 105-52, 66-65, over E | brows, c0, c8 |
| eyes shape | (y(c4) - y(c12)) / E | iris contour |
| mouth corners | (y(lip centre) - y(corners)) / M; lip centre = mean(13, 14); > 0: corners above it | 291/61, 13, 14 |
| eyes corners | (y(c8) - y(c0)) / E; > 0: outer corner above the inner one | c0, c8 |
| eyebrows corners | (y(inner) - y(outer)) / |x(outer) - x(inner)|; inner = mean(336, 285 / 107, 55), outer = mean(300, 276 / 70, 46) | brow ends |

Each ratio is bucketed into Betaface's five words by population quantiles (QUANTILES: 20/40/60/80 %,
measured by tools/measurement_quantiles.py), so "average" is the middle fifth of the faces we measured.
Yaw is not corrected: the quantiles come from faces with |yaw| < 20 and ratios of turned faces drift
(widths shrink). "head shape", "nose shape" and the hair/colour/teeth tags are not measured here.
"""

from __future__ import annotations

import numpy as np

from workers.pipeline.types import Tag

# Betaface's five words per tag, in betaface-api.txt's order.
LEVELS: dict[str, tuple[str, str, str, str, str]] = {
    "chin size": ("extra large", "large", "average", "small", "extra small"),
    "eyebrows corners": ("extra low", "low", "average", "raised", "extra raised"),
    "eyebrows position": ("extra low", "low", "average", "high", "extra high"),
    "eyebrows size": ("extra thick", "thick", "average", "thin", "extra thin"),
    "eyes corners": ("extra low", "low", "average", "raised", "extra raised"),
    "eyes distance": ("extra far", "far", "average", "close", "extra close"),
    "eyes position": ("extra low", "low", "average", "high", "extra high"),
    "eyes shape": ("extra round", "round", "average", "thin", "extra thin"),
    "head width": ("extra narrow", "narrow", "average", "wide", "extra wide"),
    "mouth corners": ("extra low", "low", "average", "raised", "extra raised"),
    "mouth height": ("extra thick", "thick", "average", "thin", "extra thin"),
    "mouth width": ("extra wide", "wide", "average", "small", "extra small"),
    "nose width": ("extra wide", "wide", "average", "narrow", "extra narrow"),
}
# Tags whose first Betaface word goes with the largest ratio (e.g. "extra far" = largest eyes distance).
LARGEST_FIRST = frozenset(
    {"chin size", "eyebrows size", "eyes distance", "eyes shape", "mouth height", "mouth width", "nose width"}
)

# 20/40/60/80 % quantiles of each ratio, from tools/measurement_quantiles.py --limit 1500: the best face of
# each of the 1,500 UTKFace crops in ../shared/data/age_gender/utkface (all ages, both genders), 1,461 of
# them with |yaw| < 20.
QUANTILES: dict[str, tuple[float, float, float, float]] = {
    "eyes distance": (0.4390, 0.4491, 0.4597, 0.4707),
    "eyes position": (0.6594, 0.6693, 0.6787, 0.6886),
    "nose width": (0.2947, 0.3095, 0.3207, 0.3329),
    "mouth width": (0.3551, 0.3914, 0.4270, 0.4673),
    "mouth height": (0.2009, 0.2318, 0.2682, 0.3167),
    "head width": (0.8762, 0.8974, 0.9156, 0.9445),
    "chin size": (0.1521, 0.1679, 0.1826, 0.1997),
    "eyebrows position": (0.1219, 0.1334, 0.1445, 0.1578),
    "eyebrows size": (0.1766, 0.1831, 0.1890, 0.1961),
    "eyes shape": (0.2827, 0.3257, 0.3582, 0.3968),
    "mouth corners": (-0.0014, 0.0357, 0.0691, 0.1004),
    "eyes corners": (0.0328, 0.0608, 0.0858, 0.1108),
    "eyebrows corners": (-0.1271, -0.1013, -0.0757, -0.0487),
}

_BROW_PAIRS = (((293, 283), (334, 282), (296, 295)), ((63, 53), (105, 52), (66, 65)))  # (upper, lower)
_BROW_MIDDLE = ((334, 282), (105, 52))
_BROW_INNER = ((336, 285), (107, 55))
_BROW_OUTER = ((300, 276), (70, 46))
_NOSE_ALAE = (358, 129)


def _eye_frame(points: np.ndarray, iris: np.ndarray) -> np.ndarray:
    """(N, K, 2) image points -> the same points in each face's eye-aligned frame (see module doc)."""
    right, left = iris[:, 0, 0, :2], iris[:, 1, 0, :2]
    x = left - right
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    y = np.stack([-x[:, 1], x[:, 0]], axis=1)  # x turned 90 degrees: down for an upright face
    d = points - ((left + right) / 2)[:, None]
    return np.stack([(d * x[:, None]).sum(-1), (d * y[:, None]).sum(-1)], axis=-1)


def ratios(mesh: np.ndarray, iris: np.ndarray, eye_contour: np.ndarray) -> dict[str, np.ndarray]:
    """Mesh (N, 468, 3), iris (N, 2, 5, 3), eye contours (N, 2, 71, 3) in image pixels -> tag -> (N,)."""
    mesh, iris, contour = (np.asarray(a, np.float64) for a in (mesh, iris, eye_contour))
    n = len(mesh)
    m = _eye_frame(mesh[..., :2], iris)
    c = _eye_frame(contour[..., :2].reshape(n, -1, 2), iris).reshape(n, 2, -1, 2)
    ir = _eye_frame(iris[:, :, 0, :2], iris)
    X, Y = m[..., 0], m[..., 1]
    cx, cy = c[..., 0], c[..., 1]  # (N, 2 eyes, 71)

    width = np.abs(X[:, 454] - X[:, 234])
    height = Y[:, 152] - Y[:, 10]
    eye_w = np.abs(cx[:, :, 0] - cx[:, :, 8])  # (N, 2)
    eye_y = (cy[:, :, 0] + cy[:, :, 8]) / 2  # (N, 2) eye centre height, per eye
    mouth_w = np.abs(X[:, 291] - X[:, 61])
    # Brows in the eye order (subject's right, left) to line up with the eye contours.
    brow_mid = np.stack([Y[:, list(_BROW_MIDDLE[k])].mean(1) for k in (1, 0)], 1)
    brow_thick = np.stack([np.mean([Y[:, lo] - Y[:, up] for up, lo in _BROW_PAIRS[k]], 0) for k in (1, 0)], 1)
    inner = np.stack([m[:, list(_BROW_INNER[k])].mean(1) for k in (1, 0)], 1)  # (N, 2, 2)
    outer = np.stack([m[:, list(_BROW_OUTER[k])].mean(1) for k in (1, 0)], 1)

    def safe(a: np.ndarray) -> np.ndarray:
        return np.maximum(a, 1e-9)

    return {
        "eyes distance": (ir[:, 1, 0] - ir[:, 0, 0]) / safe(width),
        "eyes position": (Y[:, 152] - eye_y.mean(1)) / safe(height),
        "nose width": np.abs(X[:, _NOSE_ALAE[0]] - X[:, _NOSE_ALAE[1]]) / safe(width),
        "mouth width": mouth_w / safe(width),
        "mouth height": ((Y[:, 13] - Y[:, 0]) + (Y[:, 17] - Y[:, 14])) / safe(mouth_w),
        "head width": width / safe(height),
        "chin size": (Y[:, 152] - Y[:, 17]) / safe(height),
        "eyebrows position": (eye_y - brow_mid).mean(1) / safe(height),
        "eyebrows size": brow_thick.mean(1) / safe(eye_w.mean(1)),
        "eyes shape": ((cy[:, :, 4] - cy[:, :, 12]) / safe(eye_w)).mean(1),
        "mouth corners": ((Y[:, 13] + Y[:, 14]) / 2 - (Y[:, 61] + Y[:, 291]) / 2) / safe(mouth_w),
        "eyes corners": ((cy[:, :, 8] - cy[:, :, 0]) / safe(eye_w)).mean(1),
        "eyebrows corners": (
            (inner[..., 1] - outer[..., 1]) / safe(np.abs(outer[..., 0] - inner[..., 0]))
        ).mean(1),
    }


def bucket(name: str, value: float) -> str:
    """Betaface's word for a ratio: which fifth of the measured population it falls in."""
    k = int(np.searchsorted(QUANTILES[name], value, side="right"))  # 0 = smallest fifth
    levels = LEVELS[name]
    return levels[4 - k] if name in LARGEST_FIRST else levels[k]


def measurement_tags(mesh: np.ndarray, iris: np.ndarray, eye_contour: np.ndarray) -> list[Tag]:
    """`extended` tags of one face (mesh (468, 3), iris (2, 5, 3), eye contour (2, 71, 3)): each tag with
    its bucket (confidence 1.0) and a "<tag> value" companion with the ratio."""
    values = ratios(mesh[None], iris[None], eye_contour[None])
    tags = []
    for name in LEVELS:
        v = float(values[name][0])
        if not np.isfinite(v):
            continue
        tags.append(Tag(name, bucket(name, v)))
        tags.append(Tag(f"{name} value", f"{v:.3f}"))
    return tags
