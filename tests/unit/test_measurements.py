"""`extended` geometric measurements: invariance, known changes, bucket boundaries, the pipeline's tags."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import requires_shared_data
from workers.pipeline import measurements as M

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PHOTO = DATA / "misc" / "face_recognition_ageitgey" / "examples" / "obama.jpg"
UTK = DATA / "age_gender" / "utkface" / "26_0_0_20170103235457445.jpg.chip.jpg"

# The `extended` tag lines of reference/betaface-api.txt, as written there.
REFERENCE = """
chin size - extra large, large, average, small, extra small
eyebrows corners - extra low, low, average, raised, extra raised
eyebrows position - extra low, low, average, high, extra high
eyebrows size - extra thick, thick, average, thin, extra thin
eyes corners - extra low, low, average, raised, extra raised
eyes distance - extra far, far, average, close, extra close
eyes position - extra low, low, average, high, extra high
eyes shape - extra round, round, average, thin, extra thin
head width - extra narrow, narrow, average, wide, extra wide
mouth corners - extra low, low, average, raised, extra raised
mouth height - extra thick, thick, average, thin, extra thin
mouth width - extra wide, wide, average, small, extra small
nose width - extra wide, wide, average, narrow, extra narrow
"""


def _ascending(name: str) -> tuple[str, ...]:
    levels = M.LEVELS[name]
    return levels[::-1] if name in M.LARGEST_FIRST else levels


@cache
def _landmarks(path: Path = UTK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from workers.models.fetch import model_path
    from workers.models.runtime import create_session
    from workers.models.yunet import YuNet
    from workers.pipeline.landmarks import LandmarkModels

    detector = YuNet(create_session(YuNet.dynamic_model_bytes(model_path("yunet"))))
    models = LandmarkModels.from_files(model_path("face_landmark"), model_path("iris_landmark"))
    rgb = np.asarray(Image.open(path).convert("RGB"))
    det = detector.detect(rgb)
    dense = models.predict(rgb, det.boxes[:1], det.landmarks[:1])
    return dense.mesh, dense.iris, dense.eye_contour


def _transform(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = points.copy()
    out[..., :2] = scale * points[..., :2] @ rot.T + np.asarray(shift)
    out[..., 2] = scale * points[..., 2]
    return out


def _frame(iris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit x (subject's right -> left iris) and y (down the face) of face 0, in image coordinates."""
    x = iris[0, 1, 0, :2] - iris[0, 0, 0, :2]
    x /= np.linalg.norm(x)
    return x, np.array([-x[1], x[0]])


def test_vocabulary_matches_reference() -> None:
    expected = {}
    for line in REFERENCE.strip().splitlines():
        name, words = line.split(" - ")
        expected[name] = tuple(words.split(", "))
    assert expected == M.LEVELS
    assert set(M.QUANTILES) == set(M.LEVELS)


@pytest.mark.parametrize("name", sorted(M.LEVELS))
def test_bucket_boundaries_follow_the_quantile_table(name: str) -> None:
    q = M.QUANTILES[name]
    assert all(a < b for a, b in zip(q, q[1:], strict=False))
    words = _ascending(name)
    assert M.bucket(name, q[0] - 1.0) == words[0]
    for i, edge in enumerate(q):
        assert M.bucket(name, edge - 1e-6) == words[i]
        assert M.bucket(name, edge) == words[i + 1]
    assert M.bucket(name, q[-1] + 1.0) == words[4]
    assert M.bucket(name, (q[1] + q[2]) / 2) == "average"


@requires_shared_data
@pytest.mark.models
def test_ratios_invariant_to_rotation_scale_and_shift() -> None:
    mesh, iris, contour = _landmarks()
    base = M.ratios(mesh, iris, contour)
    for angle, scale, shift in ((30.0, 1.0, (0.0, 0.0)), (-75.0, 2.5, (400.0, -120.0)), (180.0, 0.3, (5, 5))):
        moved = M.ratios(*(_transform(a, angle, scale, shift) for a in (mesh, iris, contour)))
        for name in M.LEVELS:
            np.testing.assert_allclose(moved[name], base[name], atol=1e-9, err_msg=name)
    # A real face lands inside the measured population's range, not at absurd values.
    for name, value in base.items():
        q = M.QUANTILES[name]
        spread = q[3] - q[0]
        assert q[0] - 2 * spread < value[0] < q[3] + 2 * spread, (name, value[0])


@requires_shared_data
@pytest.mark.models
def test_known_changes_move_the_right_bucket() -> None:
    mesh, iris, contour = _landmarks()
    x, y = _frame(iris)
    base = M.ratios(mesh, iris, contour)
    width = float(np.linalg.norm(mesh[0, 454, :2] - mesh[0, 234, :2]))

    def tags(mesh_: np.ndarray, iris_: np.ndarray = iris, contour_: np.ndarray = contour) -> dict:
        return {t.name: t.value for t in M.measurement_tags(mesh_[0], iris_[0], contour_[0])}

    # Mouth corners 15 % of the face width further out on each side: a very wide mouth.
    wide = mesh.copy()
    wide[0, 291, :2] += 0.15 * width * x
    wide[0, 61, :2] -= 0.15 * width * x
    assert M.ratios(wide, iris, contour)["mouth width"] > base["mouth width"]
    assert tags(wide)["mouth width"] == "extra wide"
    # Same corners pulled in: a small mouth, and thicker lips for that width.
    small = mesh.copy()
    small[0, 291, :2] -= 0.1 * width * x
    small[0, 61, :2] += 0.1 * width * x
    assert tags(small)["mouth width"] == "extra small"
    assert M.ratios(small, iris, contour)["mouth height"] > base["mouth height"]
    # Corners raised by 20 % of the mouth width: a raised mouth; lowered: a low one.
    mouth = float(np.linalg.norm(mesh[0, 291, :2] - mesh[0, 61, :2]))
    for sign, word in ((-1, "extra raised"), (1, "extra low")):
        moved = mesh.copy()
        moved[0, [61, 291], :2] += sign * 0.2 * mouth * y
        assert tags(moved)["mouth corners"] == word
    # Brows lifted by 8 % of the face width: high brows; the rest of the face unchanged.
    brows = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285]
    high = mesh.copy()
    high[0, brows, :2] -= 0.08 * width * y
    t = tags(high)
    assert t["eyebrows position"] == "extra high"
    assert t["mouth width"] == tags(mesh)["mouth width"]
    # Irises moved apart (along the eye line, so the frame keeps its direction): far-set eyes.
    apart = iris.copy()
    apart[0, 1, :, :2] += 0.05 * width * x
    apart[0, 0, :, :2] -= 0.05 * width * x
    assert tags(mesh, apart)["eyes distance"] == "extra far"
    # Outer eye corners lifted by 15 % of the eye width: raised eye corners (both eyes, so no roll).
    eye_w = float(np.linalg.norm(contour[0, 0, 0, :2] - contour[0, 0, 8, :2]))
    tilted = contour.copy()
    tilted[0, :, 0, :2] -= 0.15 * eye_w * y
    assert tags(mesh, iris, tilted)["eyes corners"] == "extra raised"
    # Chin 15 % of the face width lower: a larger chin, a taller (narrower) face.
    long_chin = mesh.copy()
    long_chin[0, 152, :2] += 0.15 * width * y
    t = tags(long_chin)
    assert t["chin size"] == "extra large"
    assert M.ratios(long_chin, iris, contour)["head width"] < base["head width"]


@requires_shared_data
@pytest.mark.models
def test_pipeline_extended_tags_on_a_real_photo() -> None:
    from facequeue.settings import get_settings
    from workers.pipeline.analyse import get_pipeline

    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider", "intra_op_threads": 1})
    faces = get_pipeline(settings).analyse(np.asarray(Image.open(PHOTO).convert("RGB")), {"extended"})
    assert faces
    tags = {t.name: t for t in faces[0].tags}
    for name, levels in M.LEVELS.items():
        assert tags[name].value in levels, (name, tags[name].value)
        assert tags[name].confidence == 1.0
        value = float(tags[f"{name} value"].value)
        assert M.bucket(name, value) == tags[name].value
    print({name: (tags[name].value, tags[f"{name} value"].value) for name in M.LEVELS})
    for face in faces[1:]:
        assert not {t.name for t in face.tags} & set(M.LEVELS)
