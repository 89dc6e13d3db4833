"""The composed pipeline on real photos: faces, points, tags, embeddings, flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import Settings, get_settings
from workers.pipeline.analyse import FacePipeline, get_pipeline
from workers.pipeline.points import BASIC_EYE_LEFT, BASIC_EYE_RIGHT, NOSE_TIP

pytestmark = pytest.mark.models

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
EXAMPLES = DATA / "misc" / "face_recognition_ageitgey" / "examples"
GROUP = DATA / "misc" / "insightface_samples" / "python-package_images" / "t1.jpg"
UTKFACE = DATA / "age_gender" / "utkface"


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
    assert [e.model_id for e in fast.embedders] == ["facenet-keras-2024"]


def test_group_photo(accurate: FacePipeline) -> None:
    faces = accurate.analyse(rgb(GROUP), {"classifiers"})
    assert len(faces) == 6
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 and 0 <= y1 < y2
        assert set(face.embeddings) == {"facenet-keras-2024", "dlib-resnet-v1"}
        for vector in face.embeddings.values():
            assert vector.shape == (128,) and vector.dtype == np.float32
            assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        tags = {t.name: t for t in face.tags}
        assert {"age", "gender"} <= set(tags)  # other classifiers add more tags
        assert 1 <= int(tags["age"].value) <= 80 and 0 < tags["age"].confidence <= 1
        assert tags["gender"].value in {"male", "female"} and 0.5 <= tags["gender"].confidence <= 1
        points = {p.type: p for p in face.points}
        assert points[BASIC_EYE_LEFT].x < points[NOSE_TIP].x < points[BASIC_EYE_RIGHT].x
        assert abs(face.angle) < 15  # everyone in this photo holds the head roughly upright
    # Left to right: three women and three men; the network may miss one (a man looking down).
    by_x = sorted(faces, key=lambda f: f.box[0])
    genders = [next(t.value for t in f.tags if t.name == "gender") for f in by_x]
    truth = ["female", "female", "male", "male", "male", "female"]
    assert sum(g == t for g, t in zip(genders, truth, strict=True)) >= 5


def test_flags(accurate: FacePipeline) -> None:
    image = rgb(GROUP)
    best = accurate.analyse(image, {"bestface"})
    everyone = accurate.analyse(image, set())
    assert len(best) == 1 and best[0].score == max(f.score for f in everyone)
    assert all(not f.tags for f in everyone)  # no classifiers flag, no tags
    assert accurate.analyse(np.full((240, 320, 3), 90, np.uint8), {"classifiers"}) == []


def test_same_person_is_closer(accurate: FacePipeline) -> None:
    def one(name: str) -> dict[str, np.ndarray]:
        (face,) = accurate.analyse(rgb(EXAMPLES / name), {"bestface"})
        return face.embeddings

    obama, obama2, biden = one("obama.jpg"), one("obama2.jpg"), one("biden.jpg")
    for model in obama:
        same = float(obama[model] @ obama2[model])
        other = max(float(obama[model] @ biden[model]), float(obama2[model] @ biden[model]))
        assert same > other + 0.1, model


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
    paths = [EXAMPLES / "obama.jpg", GROUP, EXAMPLES / "biden.jpg", EXAMPLES / "two_people.jpg"]
    images = [rgb(p) for p in paths] + [np.full((200, 300, 3), 90, np.uint8)]
    together = accurate.analyse_many(images, {"classifiers"})
    for image, batch_faces in zip(images, together, strict=True):
        alone = accurate.analyse(image, {"classifiers"})
        assert len(batch_faces) == len(alone)
        for a, b in zip(alone, batch_faces, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1.0)
            for model in a.embeddings:
                assert float(a.embeddings[model] @ b.embeddings[model]) > 0.99
            assert {t.name for t in a.tags} == {t.name for t in b.tags}
