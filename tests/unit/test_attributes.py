"""Attribute tags on real photos: face-api.js expression photos, and transformed copies with known effects."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.photos import requires_shared_data
from workers.pipeline import attributes as A
from workers.pipeline.landmarks import DenseLandmarks, LandmarkModels
from workers.pipeline.types import Tag

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EXPRESSIONS = DATA / "misc" / "face-api.js" / "examples_images"
# face-api.js file name -> fer label
FILES = {
    "angry": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprised": "surprise",
}


@cache
def _models() -> tuple[object, LandmarkModels, object]:
    from workers.models.emotion import EmotionClassifier
    from workers.models.fetch import model_path
    from workers.models.runtime import create_session
    from workers.models.yunet import YuNet

    detector = YuNet(create_session(YuNet.dynamic_model_bytes(model_path("yunet"))))
    landmarks = LandmarkModels.from_files(model_path("face_landmark"), model_path("iris_landmark"))
    return detector, landmarks, EmotionClassifier.from_file(model_path("emotion"))


def _analyse(image: Image.Image) -> tuple[dict[str, Tag], DenseLandmarks]:
    detector, landmarks, emotion = _models()
    rgb = np.asarray(image.convert("RGB"))
    det = detector.detect(rgb)
    assert len(det) >= 1
    dense = landmarks.predict(rgb, det.boxes[:1], det.landmarks[:1])
    tags = A.face_tags(rgb, det.boxes[:1], dense, emotion)[0]
    return {t.name: t for t in tags}, dense


def _photo(name: str) -> Image.Image:
    return Image.open(EXPRESSIONS / f"{name}.jpg")


@requires_shared_data
@pytest.mark.models
def test_expression_smile_mouth_on_expression_photos() -> None:
    results = {name: _analyse(_photo(name))[0] for name in FILES}
    hits = [results[name]["expression"].value == label for name, label in FILES.items()]
    print({name: (t["expression"].value, t["expression"].confidence) for name, t in results.items()})
    assert sum(hits) >= 5  # measured: 5 of 7 (disgusted reads neutral, sad reads angry)
    assert results["happy"]["smile"].value == "yes"
    assert all(results[n]["smile"].value == "no" for n in FILES if n != "happy")
    assert (
        results["surprised"]["mouth open"].value == "yes" and results["fearful"]["mouth open"].value == "yes"
    )
    assert results["angry"]["mouth open"].value == "no" and results["neutral"]["mouth open"].value == "no"
    for t in results.values():
        assert {"yaw", "pitch", "roll", "blur", "exposure", "noise", "quality", "face_size"} <= t.keys()
        assert t["eye_left_open"].value == "yes" or float(t["eye_left_aspect"].value) < A.EYE_OPEN_EAR
        assert 0 <= t["quality"].confidence <= 1
    assert abs(float(results["neutral"]["yaw"].value)) < 10


@requires_shared_data
@pytest.mark.models
def test_pose_follows_flips_and_rotations() -> None:
    photo = _photo("happy")
    base, dense = _analyse(photo)
    flipped, _ = _analyse(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    yaw, yaw_flipped = float(base["yaw"].value), float(flipped["yaw"].value)
    assert abs(yaw) > 8 and abs(yaw + yaw_flipped) < 8  # a mirror image turns the other way
    assert abs(float(base["roll"].value) + float(flipped["roll"].value)) < 4
    # PIL rotates counter-clockwise on screen: roll (clockwise positive) drops by the angle.
    turned, _ = _analyse(photo.rotate(20, expand=True))
    assert float(turned["roll"].value) - float(base["roll"].value) == pytest.approx(-20, abs=4)
    # A known 3-D rotation of a real mesh about the vertical axis adds to yaw.
    mesh = dense.mesh[0] - dense.mesh[0].mean(0)
    a = np.radians(25)
    rot = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    pose0, pose1 = A.head_pose(np.stack([mesh, mesh @ rot.T]))
    assert pose1[0] - pose0[0] == pytest.approx(25, abs=1.5)


@requires_shared_data
@pytest.mark.models
def test_blur_noise_exposure_respond() -> None:
    photo = _photo("neutral")
    sharp, _ = _analyse(photo)
    blurred, _ = _analyse(photo.filter(ImageFilter.GaussianBlur(3)))
    noise = np.random.default_rng(0).normal(0, 12, np.asarray(photo.convert("RGB")).shape)
    noisy, _ = _analyse(
        Image.fromarray(np.clip(np.asarray(photo.convert("RGB")) + noise, 0, 255).astype(np.uint8))
    )
    dark, _ = _analyse(Image.fromarray((np.asarray(photo.convert("RGB")) * 0.3).astype(np.uint8)))
    assert sharp["blur"].value == "low" and blurred["blur"].value == "high"
    assert blurred["quality_for_recognition"].confidence < sharp["quality_for_recognition"].confidence
    assert (
        sharp["noise"].value == "low"
        and float(noisy["noise value"].value) > float(sharp["noise value"].value) + 4
    )
    assert sharp["exposure"].value == "goodExposure" and dark["exposure"].value == "underExposure"


@requires_shared_data
@pytest.mark.models
def test_colours() -> None:
    photo = _photo("surprised")  # plain white background
    rgb = np.asarray(photo.convert("RGB"))
    _, dense = _analyse(photo)
    colours = {t.name: bytes.fromhex(t.value) for t in A.colour_tags(rgb, dense, 0)}
    assert min(colours["color background"]) > 0xE0
    skin = colours["color skin"]
    assert skin[0] > skin[2]  # skin is redder than it is blue
    assert {"color skin", "color eyes", "color hair"} <= colours.keys()


def test_measures_on_synthetic_contours() -> None:
    contour = np.zeros((1, 2, 71, 3))
    contour[:, :, 0, 0], contour[:, :, 8, 0] = 0, 30  # corners 30 px apart
    contour[:, :, [10, 14], 1], contour[:, :, [2, 6], 1] = -6, 6  # lids 12 px apart
    np.testing.assert_allclose(A.eye_aspect_ratios(contour), 0.4)
    mesh = np.zeros((1, 468, 3))
    mesh[0, 61, 0], mesh[0, 291, 0], mesh[0, 14, 1] = -20, 20, 8
    np.testing.assert_allclose(A.mouth_opening(mesh), 0.2)
