"""blur / exposure / noise levels and recognition quality on the free studio portraits (no ../shared needed).

Controlled degradations of real photos: a Gaussian-blur ladder, added noise and exposure shifts must move
the measurements monotonically and cross the levels in order; a sharp, well-lit studio portrait reads
low blur, good exposure and low noise whatever the size of its face.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facequeue.settings import get_settings
from tests.photos import astronaut, hopper
from workers.models.emotion import LABELS
from workers.pipeline import attributes as A

pytestmark = pytest.mark.models
PORTRAITS = {"astronaut": astronaut, "hopper": hopper}


@cache
def _pipeline():  # type: ignore[no-untyped-def]
    from workers.pipeline.analyse import get_pipeline

    return get_pipeline(get_settings().model_copy(update={"providers": "CPUExecutionProvider"}))


def _face(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grey image, best face box)."""
    det = _pipeline().detector.detect(rgb, "fast")
    assert len(det) >= 1
    return np.asarray(Image.fromarray(rgb).convert("L")), det.boxes[0]


def _tags(rgb: np.ndarray) -> dict:
    faces = _pipeline().analyse(rgb, {"bestface", "classifiers"})
    assert faces
    return {t.name: t for t in faces[0].tags}


def _ev(grey: np.ndarray, ev: float) -> np.ndarray:
    return (np.clip((grey / 255.0) ** 2.2 * 2.0**ev, 0, 1) ** (1 / 2.2) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("name", PORTRAITS)
def test_studio_portrait_reads_sharp_well_lit_and_clean(name: str) -> None:
    tags = _tags(PORTRAITS[name]())
    assert tags["blur"].value == "low"
    assert tags["exposure"].value == "goodExposure"
    assert tags["noise"].value == "low"
    assert tags["quality_for_recognition"].value == "high" and tags["quality"].value == "good"


@pytest.mark.parametrize("name", PORTRAITS)
def test_ladders_are_monotone_and_cross_the_levels_in_order(name: str) -> None:
    grey, box = _face(PORTRAITS[name]())
    levels = A.quality_calibration()["image"]["levels"]
    width = float(box[2] - box[0])
    # Blur: sigma in pixels at a 112-px face, as the calibration defines it.
    blur = [
        A.image_quality(
            np.asarray(Image.fromarray(grey).filter(ImageFilter.GaussianBlur(s * width / 112))), box
        )[0]
        for s in (0, 1.5, 3, 4, 6)
    ]
    assert all(b >= a - 0.005 for a, b in zip(blur, blur[1:], strict=False)), blur
    words = [A._level(b, levels["blur"], ("low", "medium", "high")) for b in blur]
    assert (
        words[0] == "low"
        and words[-1] == "high"
        and words == sorted(words, key=["low", "medium", "high"].index)
    )
    rng = np.random.default_rng(0)
    noise = [
        A.image_quality(np.clip(grey + rng.normal(0, s, grey.shape), 0, 255).astype(np.uint8), box)[2]
        for s in (0, 4, 8, 16, 24)
    ]
    assert noise == sorted(noise), noise
    assert (
        A._level(noise[0], levels["noise"], "lmh") == "l"
        and A._level(noise[-1], levels["noise"], "lmh") == "h"
    )
    exposure = [A.image_quality(_ev(grey, ev), box)[1] for ev in (-3, -1, 0, 1, 3)]
    assert exposure == sorted(exposure), exposure
    names = ("under", "good", "over")
    assert [A._level(e, levels["exposure"], names) for e in exposure[::2]] == list(names)


def test_blur_does_not_depend_on_face_size() -> None:
    rgb = hopper()
    values = []
    for factor in (1.0, 0.6):  # face about 170 px, then about 100 px wide
        image = Image.fromarray(rgb)
        small = np.asarray(
            image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        )
        grey, box = _face(small)
        values.append(A.image_quality(grey, box)[0])
    assert abs(values[0] - values[1]) < 0.05, values


def test_all_seven_emotion_probabilities() -> None:
    tags = _tags(hopper())
    probs = {label: tags[A.EMOTION_TAG.format(label)] for label in LABELS}
    assert sum(float(t.value) for t in probs.values()) == pytest.approx(1.0, abs=0.01)
    top = max(probs, key=lambda k: probs[k].confidence)
    assert tags["expression"].value == top and tags["expression"].confidence == probs[top].confidence


def test_recognition_quality_drops_with_blur() -> None:
    rgb = hopper()
    grey, box = _face(rgb)
    sigma = 4 * float(box[2] - box[0]) / 112
    blurred = np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(sigma)))
    sharp, soft = _tags(rgb), _tags(blurred)
    assert soft["blur"].value == "high"
    assert soft["quality_for_recognition"].confidence < sharp["quality_for_recognition"].confidence


def test_recognition_quality_is_fitted_for_the_default_profile() -> None:
    """quality_for_recognition predicts acceptance by the default profile's embeddings: refit it
    (tools/calibrate_quality.py recognition) whenever the default profile changes."""
    from workers.recognition.profiles import calibration_key

    fit = A.quality_calibration()["recognition"]
    profile = get_settings().embedding_profile
    assert fit["profile"] == profile and fit["model"] == calibration_key(profile)
