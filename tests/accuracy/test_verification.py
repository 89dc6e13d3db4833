"""Face verification: our fast and accurate profiles against face_recognition (dlib) on the same pairs.

Sets (identity-labelled photos from ../shared/data, colour, one subject per photo):
- cacd_vs: the 800 given pairs (400 same / 400 different; celebrities across large age gaps);
- lag: every pair of the Large Age-Gap photos (150 people, 100x100 crops);
- face-api.js: every pair of the 8 TV characters x 5 small crops;
- deepface: every pair of the grouped photos of deepface's unit-test set (groups from data/README.md).
The pairs of all four are also pooled. Photos larger than MAX_SIDE are shrunk first, for both systems.
A photo where a system finds no face gives its pairs that system's lowest score (a failure to enrol).

Scores: fast = cosine of FaceNet embeddings (fp32, and int8 calibrated on FG-NET photos); accurate = mean of the FaceNet and dlib-ResNet cosines;
peer = minus the Euclidean distance of dlib descriptors (face_recognition.face_distance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facequeue.settings import get_settings
from tests.accuracy.common import (
    PairSet,
    all_pairs,
    cacd_pairs,
    deepface_groups,
    ensure_int8_facenet,
    face_api_groups,
    lag_groups,
    score_pairs,
    summarise,
)
from tests.accuracy.peer import PeerEncoder
from workers.pipeline.analyse import FacePipeline

pytestmark = [pytest.mark.models, pytest.mark.peers]

MAX_SIDE = 800
FACENET, FACENET_INT8, DLIB = "facenet-keras-2024", "facenet-keras-2024-int8", "dlib-resnet-v1"


def load(path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(image)


@pytest.fixture(scope="module")
def pair_sets() -> list[PairSet]:
    sets = [
        cacd_pairs(),
        all_pairs("lag", lag_groups()),
        all_pairs("face-api.js", face_api_groups()),
        all_pairs("deepface", deepface_groups()),
    ]
    for s in sets:
        assert s.pairs and any(p[2] for p in s.pairs) and not all(p[2] for p in s.pairs), s.name
    return [*sets, PairSet("all", [p for s in sets for p in s.pairs])]


@pytest.fixture(scope="module")
def results(pair_sets: list[PairSet]) -> dict[str, dict[str, dict[str, float]]]:
    settings = get_settings().model_copy(
        update={
            "embedding_profile": "accurate",
            "int8_embeddings": False,
            "providers": "CPUExecutionProvider",
        }
    )
    ours = FacePipeline.from_settings(settings)
    int8_settings = settings.model_copy(update={"embedding_profile": "fast", "int8_embeddings": True})
    ensure_int8_facenet(int8_settings)
    ours_int8 = FacePipeline.from_settings(int8_settings)
    peer = PeerEncoder()

    def embed_ours(path: Path) -> dict[str, np.ndarray] | None:
        faces = ours.analyse(load(path), {"bestface"})
        return faces[0].embeddings if faces else None

    def embed_int8(path: Path) -> dict[str, np.ndarray] | None:
        faces = ours_int8.analyse(load(path), {"bestface"})
        return faces[0].embeddings if faces else None

    def embed_peer(path: Path) -> np.ndarray | None:
        return peer.largest_face(load(path))

    systems = {
        "fast": (embed_ours, lambda a, b: float(a[FACENET] @ b[FACENET])),
        "accurate": (embed_ours, lambda a, b: float(a[FACENET] @ b[FACENET] + a[DLIB] @ b[DLIB]) / 2),
        "fast int8": (embed_int8, lambda a, b: float(a[FACENET_INT8] @ b[FACENET_INT8])),
        "face_recognition": (embed_peer, lambda a, b: -float(np.linalg.norm(a - b))),
    }
    cache: dict[str, dict[Path, object]] = {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pair_set in pair_sets:
        out[pair_set.name] = {}
        for system, (embed, compare) in systems.items():
            memo = cache.setdefault(embed.__name__, {})

            def cached(path: Path, embed=embed, memo=memo) -> object:
                if path not in memo:
                    memo[path] = embed(path)
                return memo[path]

            same, scores, missing = score_pairs(pair_set.pairs, cached, compare)
            out[pair_set.name][system] = {**summarise(same, scores), "no_face": float(missing)}
    print()
    for name, by_system in out.items():
        for system, m in by_system.items():
            print(
                f"{name:12s} {system:17s} pairs {int(m['pairs']):6d} ({int(m['same'])} same)  best-acc {m['best_acc']:.4f}  "
                f"cv-acc {m['cv_acc']:.4f}  TAR@FAR1e-2 {m['tar@far1e-2']:.4f}  "
                f"TAR@FAR1e-3 {m['tar@far1e-3']:.4f}  no face {int(m['no_face'])}"
            )
    return out


def test_fast_profile_beats_face_recognition(results: dict[str, dict[str, dict[str, float]]]) -> None:
    pooled = results["all"]
    assert pooled["fast"]["cv_acc"] >= pooled["face_recognition"]["cv_acc"] + 0.003
    assert pooled["fast"]["tar@far1e-3"] >= pooled["face_recognition"]["tar@far1e-3"]
    assert results["cacd_vs"]["fast"]["cv_acc"] >= results["cacd_vs"]["face_recognition"]["cv_acc"] + 0.003


def test_int8_embeddings_keep_the_lead(results: dict[str, dict[str, dict[str, float]]]) -> None:
    pooled = results["all"]
    assert pooled["fast int8"]["cv_acc"] >= pooled["fast"]["cv_acc"] - 0.005
    assert pooled["fast int8"]["cv_acc"] >= pooled["face_recognition"]["cv_acc"]


def test_accurate_profile_is_not_worse_than_fast(results: dict[str, dict[str, dict[str, float]]]) -> None:
    pooled = results["all"]
    assert pooled["accurate"]["cv_acc"] >= pooled["fast"]["cv_acc"] - 0.002
    assert pooled["accurate"]["cv_acc"] >= pooled["face_recognition"]["cv_acc"] + 0.003
