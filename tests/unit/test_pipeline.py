"""The composed pipeline on real photos: faces, points, tags, embeddings, flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import Settings, get_settings
from tests.photos import SHARED_DATA, astronaut, group, hopper, requires_shared_data
from workers.pipeline.analyse import FacePipeline, get_pipeline
from workers.pipeline.points import BASIC_EYE_LEFT, BASIC_EYE_RIGHT, NOSE_TIP

pytestmark = pytest.mark.models

UTKFACE = SHARED_DATA / "age_gender" / "utkface"


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def settings(**update: object) -> Settings:
    return get_settings().model_copy(
        update={"providers": "CPUExecutionProvider", "intra_op_threads": 1, **update}
    )


@pytest.fixture(scope="module")
def accurate() -> FacePipeline:
    return get_pipeline(settings(embedding_profile="accurate", int8_embeddings=False))


def test_get_pipeline_is_cached_per_settings(accurate: FacePipeline) -> None:
    assert get_pipeline(settings(embedding_profile="accurate", int8_embeddings=False)) is accurate
    fast = get_pipeline(settings(embedding_profile="fast", int8_embeddings=False))
    assert fast is not accurate
    assert [e.model_id for e in fast.embedders] == ["sface-2021dec"]
    assert [e.model_id for e in accurate.embedders] == ["sface-2021dec", "dlib-resnet-v1"]


def test_group_photo(accurate: FacePipeline) -> None:
    faces = accurate.analyse(group(), {"classifiers"})
    assert len(faces) == 2
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 and 0 <= y1 < y2
        assert set(face.embeddings) == {"sface-2021dec", "dlib-resnet-v1"}
        for vector in face.embeddings.values():
            assert vector.shape == (128,) and vector.dtype == np.float32
            assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        tags = {t.name: t for t in face.tags}
        assert {"age", "gender", "roll"} <= set(tags)  # other classifiers add more tags
        assert 0 < tags["age"].confidence <= 1
        assert tags["gender"].value in {"male", "female"} and 0.5 <= tags["gender"].confidence <= 1
        points = {p.type: p for p in face.points}
        assert points[BASIC_EYE_LEFT].x < points[NOSE_TIP].x < points[BASIC_EYE_RIGHT].x
        assert abs(face.angle) < 15  # both hold the head roughly upright
        assert face.angle == float(tags["roll"].value)  # one definition of the in-plane rotation
    # Left to right: Eileen Collins (astronaut portrait), then Grace Hopper.
    collins, hopper_ = sorted(faces, key=lambda f: f.box[0])
    assert collins.box[2] < 560 <= hopper_.box[0]
    ages = [int(next(t.value for t in face.tags if t.name == "age")) for face in (collins, hopper_)]
    assert 25 <= ages[0] <= 45 and ages[1] >= 60  # about 36 and 77 when photographed
    # Collins reads female; the gender model calls Hopper (77, in uniform) male: a real model error.
    assert next(t.value for t in collins.tags if t.name == "gender") == "female"


def test_flags(accurate: FacePipeline) -> None:
    image = group()
    best = accurate.analyse(image, {"bestface"})
    everyone = accurate.analyse(image, {"basic"})
    assert len(best) == 1 and best[0].score == max(f.score for f in everyone)
    assert len(everyone) == 2
    # bestface / basic: box, score, the 5 basic points and the embeddings, nothing else.
    for face in [*best, *everyone]:
        assert not face.tags and len(face.points) == 5 and len(face.embeddings) == 2
    dense = accurate.analyse(image, {"propoints"})
    assert all(len(f.points) > 70 and not f.tags for f in dense)
    assert accurate.analyse(np.full((240, 320, 3), 90, np.uint8), {"classifiers"}) == []


def test_same_person_is_closer(accurate: FacePipeline) -> None:
    def one(image: np.ndarray) -> dict[str, np.ndarray]:
        (face,) = accurate.analyse(image, {"bestface"})
        return face.embeddings

    # Another shot of the same face: smaller, shifted, darker, JPEG-recompressed.
    variant = Image.fromarray(astronaut()).crop((40, 10, 470, 440)).resize((300, 300))
    variant = np.asarray(Image.eval(variant, lambda v: int(v * 0.8)))
    collins, collins2, hopper_ = one(astronaut()), one(variant), one(hopper())
    for model in collins:
        same = float(collins[model] @ collins2[model])
        other = max(float(collins[model] @ hopper_[model]), float(collins2[model] @ hopper_[model]))
        assert same > other + 0.05, model


@requires_shared_data
def test_gender_output_order_on_utkface(accurate: FacePipeline) -> None:
    """UTKFace names carry gender (0 = male): index 1 of the gender network must be male."""
    right = total = 0
    for path in sorted(UTKFACE.glob("*_*_*.jpg"))[::25]:  # 60 files spread over all ages
        faces = accurate.analyse(rgb(path), {"bestface", "classifiers"})
        if not faces:
            continue
        gender = next(t.value for t in faces[0].tags if t.name == "gender")
        right += gender == ("male" if path.name.split("_")[1] == "0" else "female")
        total += 1
    assert total >= 55
    assert right / total > 0.75


def test_analyse_many_matches_one_by_one(accurate: FacePipeline) -> None:
    """Micro-batching across images gives the same faces as analysing each image alone."""
    images = [astronaut(), group(), hopper(), np.full((200, 300, 3), 90, np.uint8)]
    together = accurate.analyse_many(images, {"classifiers"})
    for image, batch_faces in zip(images, together, strict=True):
        alone = accurate.analyse(image, {"classifiers"})
        assert len(batch_faces) == len(alone)
        for a, b in zip(alone, batch_faces, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1.0)
            for model in a.embeddings:
                assert float(a.embeddings[model] @ b.embeddings[model]) > 0.99
            assert {t.name for t in a.tags} == {t.name for t in b.tags}
