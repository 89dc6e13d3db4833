"""Embedding profiles: which models embed every face, and which vectors recognition compares.

One place for both sides (the pipeline that computes vectors, recognition that compares them), so a
profile can never compare vectors its pipeline did not make. Vectors are stored per model id (the
Embedding table's model_id) and only ever compared with vectors of the same model id; a profile of
several models compares each model's vectors separately and fuses the z-normalised distances.

Chosen by measurement (tools/calibrate.py, tests/accuracy; figures in the README):
- `fast`: SFace alone;
- `accurate`: SFace + dlib ResNet, fused (weights from the calibration table). FaceNet + SFace was the
  expected pair; on our data it did not beat SFace alone at FMR 1e-3, while SFace + dlib did a little,
  at a quarter of FaceNet's cost and with CC0 weights (README, Embedding profiles);
- `facenet`, `facenet-dlib`: the earlier `fast` and `accurate` profiles, kept so galleries enrolled
  with them keep working until `facequeue reembed` has re-computed their vectors.
"""

from __future__ import annotations

# Registry name (workers/models/registry.py) -> the model id its vectors are stored under.
MODEL_IDS = {
    "facenet": "facenet-keras-2024",
    "sface": "sface-2021dec",
    "dlib_resnet": "dlib-resnet-v1",
}
PROFILES: dict[str, tuple[str, ...]] = {
    "fast": ("sface",),
    "accurate": ("sface", "dlib_resnet"),
    "facenet": ("facenet",),
    "facenet-dlib": ("facenet", "dlib_resnet"),
}
INT8_SUFFIX = "-int8"  # FaceNet int8 vectors carry their own model id


def embedder_names(profile: str) -> tuple[str, ...]:
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown embedding profile {profile!r}; one of {list(PROFILES)}") from None


def profile_models(profile: str, int8: bool = False) -> tuple[str, ...]:
    """Model ids the profile stores and compares, the first one being what namespace indexes search."""
    ids = []
    for name in embedder_names(profile):
        model_id = MODEL_IDS[name]
        ids.append(model_id + INT8_SUFFIX if int8 and name == "facenet" else model_id)
    return tuple(ids)


def calibration_key(profile: str) -> str:
    """The calibration table entry: the model id of a one-model profile, the profile name of a fused one.

    int8 FaceNet stays within cosine 0.01 of fp32 (tests/unit/test_facenet.py): it shares fp32's entry.
    """
    names = embedder_names(profile)
    return MODEL_IDS[names[0]] if len(names) == 1 else profile
