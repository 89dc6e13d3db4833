"""Recognition: compare query faces with target faces, persons or whole namespaces.

Targets are resolved to (face, person) rows in Postgres, the vectors of the profile's model(s) are compared
(never across models), and distances become calibrated confidences with an FMR-based match threshold.
Faces reached through `all@namespace` (1:N identification) are decided at the gallery-size-aware
threshold: FMR = FPIR / N for a namespace of N faces (workers/recognition/calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.errors import ErrorCode, FacequeueError
from schema.persons import ALL, namespace_id, owned_faces, parse_person_id
from schema.tables import Embedding, Face, Namespace, Person
from workers.recognition import calibration, profiles
from workers.recognition.namespaces import NamespaceIndexes, namespace_indexes

CANDIDATES_PER_RESULT = 5  # nearest faces fetched per wanted person: persons have several faces each
FMR_CHOICES = (1e-3, 1e-4, 1e-5)


@dataclass(frozen=True)
class Parameters:
    max_results: int = 10
    min_match_score: float = 0.0
    fmr: float = 1e-3
    raw_threshold: float | None = None  # a distance threshold given directly, instead of an FMR
    fpir: float = 1e-2  # all@namespace targets: false alarms per probe, whatever the gallery size


PARAMETER_NAMES = ("max_results", "min_match_score", "fmr", "threshold", "fpir")
THRESHOLD_RANGE = (-100.0, 100.0)  # cosine distances lie in [0, 2]; the fused profile's are z-scores


def _number(key: str, value: str, kind: type) -> float:
    try:
        number = kind(value)
    except ValueError as exc:
        raise FacequeueError(
            ErrorCode.INVALID_REQUEST, f"recognition parameter {key} must be a number, not {value[:40]!r}"
        ) from exc
    if not math.isfinite(number):  # "nan", "inf", "1e999": refused here, never stored as JSON
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"recognition parameter {key} must be finite")
    return number


def parse_parameters(text: str | None, default_fmr: float, default_fpir: float = 1e-2) -> Parameters:
    """`min_match_score:0.6,max_results:5,fmr:1e-4,fpir:0.01` (or `threshold:<distance>`); anything else is refused:
    unknown names, repeated names, non-finite numbers and values out of range (INVALID_REQUEST)."""
    values: dict[str, str] = {}
    for item in (text or "").replace(";", ",").split(","):
        if not item.strip():
            continue
        key, colon, value = item.partition(":")
        key = key.strip().lower()
        if key not in PARAMETER_NAMES or not colon:
            raise FacequeueError(
                ErrorCode.INVALID_REQUEST,
                f"unknown recognition parameter {item.strip()[:40]!r}; "
                f"use name:value with names {', '.join(PARAMETER_NAMES)}",
            )
        if key in values:
            raise FacequeueError(ErrorCode.INVALID_REQUEST, f"recognition parameter {key} given twice")
        values[key] = value.strip()
    max_results = _number("max_results", values.get("max_results", "10"), int)
    min_match_score = _number("min_match_score", values.get("min_match_score", "0"), float)
    fmr = _number("fmr", values["fmr"], float) if "fmr" in values else default_fmr
    threshold = _number("threshold", values["threshold"], float) if "threshold" in values else None
    if not 1 <= max_results <= 1000:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "max_results must be 1..1000")
    if not 0 <= min_match_score <= 1:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "min_match_score is a confidence in [0, 1]")
    if fmr not in FMR_CHOICES:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"fmr must be one of {FMR_CHOICES}")
    if threshold is not None and not THRESHOLD_RANGE[0] <= threshold <= THRESHOLD_RANGE[1]:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"threshold must be within {THRESHOLD_RANGE}")
    fpir = _number("fpir", values["fpir"], float) if "fpir" in values else default_fpir
    if not 0 < fpir <= 0.1:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "fpir must be in (0, 0.1]")
    return Parameters(int(max_results), float(min_match_score), float(fmr), threshold, float(fpir))


@dataclass
class Targets:
    face_uids: list[str]
    person_ids: list[str | None]  # person of each face ("name@ns"), or None
    by_person: list[bool]  # whether the face was asked for as part of a person / namespace target
    open_set: list[bool] = field(default_factory=list)  # reached through all@namespace (1:N)
    gallery_size: int = 0  # faces in the namespaces searched by all@ targets

    def extend(self, rows: list, by_person: bool, open_set: bool = False) -> None:
        for uid, name, namespace in rows:
            self.face_uids.append(uid)
            self.person_ids.append(f"{name}@{namespace}" if name is not None else None)
            self.by_person.append(by_person)
            self.open_set.append(open_set)


def resolve_targets(
    session: Session,
    tenant_id: int,
    targets: list[str],
    queries: np.ndarray,
    model: str,
    candidates: int,
    indexes: NamespaceIndexes,
) -> Targets:
    """Face uids as themselves; `name@ns` as that person's faces; `all@ns` as the persons of ns whose faces
    are among the `candidates` nearest to any query (`model` vectors) in the namespace's index (every face,
    when it is small)."""
    face_targets, person_rows, candidate_ids = [], [], []
    gallery_size = 0
    for target in targets:
        if "@" not in target:
            face_targets.append(target)
            continue
        pid = parse_person_id(target)
        ns = namespace_id(session, tenant_id, pid.namespace, create=False)
        if ns is None:
            continue
        if pid.name == ALL:
            index = indexes.get(session, tenant_id, ns, model)
            gallery_size += len(index)
            ids, _ = index.search(queries, min(candidates, len(index)) if len(index) else 0)
            candidate_ids.extend(int(i) for i in np.unique(ids) if i >= 0)
        else:
            person_rows.append((ns, pid.name))
    resolved = Targets([], [], [], gallery_size=gallery_size)
    face_info = (
        select(Face.uid, Person.name, Namespace.name)
        .outerjoin(Person, Face.person_id == Person.id)
        .outerjoin(Namespace, Person.namespace_id == Namespace.id)
        .where(Face.tenant_id == tenant_id)
    )
    if face_targets:
        rows = session.execute(face_info.where(Face.uid.in_(face_targets))).all()
        missing = set(face_targets) - {row[0] for row in rows}
        if missing:
            raise FacequeueError(
                ErrorCode.INVALID_TARGET, f"unknown target face(s): {', '.join(sorted(missing)[:5])}"
            )
        resolved.extend(rows, by_person=False)
    for ns, name in person_rows:
        resolved.extend(
            session.execute(face_info.where(Person.namespace_id == ns, Person.name == name)).all(), True
        )
    if candidate_ids:
        # Stale ids (a face moved since the index was synced) drop out here: Postgres has the last word.
        rows = session.execute(face_info.where(Face.id.in_(candidate_ids), Person.id.is_not(None))).all()
        resolved.extend(rows, by_person=True, open_set=True)
    return resolved


def load_vectors(session: Session, face_uids: list[str], models: tuple[str, ...]) -> dict[str, np.ndarray]:
    """(len(face_uids), 128) per model, rows in face_uids order; faces lacking a model's vector raise."""
    rows = session.execute(
        select(Embedding.face_uid, Embedding.model_id, Embedding.vector).where(
            Embedding.face_uid.in_(face_uids), Embedding.model_id.in_(models)
        )
    ).all()
    found = {(uid, model): np.frombuffer(vector, dtype="<f4") for uid, model, vector in rows}
    out = {}
    for model in models:
        missing = [uid for uid in face_uids if (uid, model) not in found]
        if missing:
            raise FacequeueError(
                ErrorCode.FACE_HAS_NO_EMBEDDING, f"face {missing[0]} has no {model} embedding"
            )
        out[model] = (
            np.stack([found[(uid, model)] for uid in face_uids]) if face_uids else np.zeros((0, 128), "f4")
        )
    return out


def profile_models(settings: Settings) -> tuple[str, ...]:
    """The embedding models the profile compares, first the one the namespace indexes search.

    Vectors are compared only within one model id; int8 FaceNet vectors carry their own id.
    """
    return profiles.profile_models(settings.embedding_profile, settings.int8_embeddings)


def calibration_key(settings: Settings) -> str:
    return profiles.calibration_key(settings.embedding_profile)


def distances(queries: dict[str, np.ndarray], targets: dict[str, np.ndarray], key: str) -> np.ndarray:
    """Cosine distances (Q, T) of the one model, or the calibrated fusion of several (profile `key`)."""
    suffix = profiles.INT8_SUFFIX
    per_model = {model.removesuffix(suffix): 1.0 - queries[model] @ targets[model].T for model in queries}
    if len(per_model) > 1:
        return calibration.fused_distance(key, per_model)
    (only,) = per_model.values()
    return only


def recognize(session: Session, tenant_id: int, request: dict, settings: Settings) -> dict:
    params = parse_parameters(request.get("parameters"), settings.default_fmr, settings.default_fpir)
    query_uids: list[str] = request["faces_uuids"]
    owned_faces(session, tenant_id, query_uids)
    models = profile_models(settings)
    queries = load_vectors(session, query_uids, models)
    candidates = params.max_results * CANDIDATES_PER_RESULT
    targets = resolve_targets(
        session,
        tenant_id,
        request["targets"],
        queries[models[0]],
        models[0],
        candidates,
        namespace_indexes(settings),
    )
    model_key = calibration_key(settings)
    threshold = (
        params.raw_threshold
        if params.raw_threshold is not None
        else calibration.threshold(model_key, params.fmr)
    )
    # 1:N: never looser than the FMR asked for, and tight enough for the FPIR target at this gallery size.
    identification_fmr = min(params.fmr, calibration.identification_fmr(params.fpir, targets.gallery_size))
    open_threshold = (
        threshold
        if params.raw_threshold is not None
        else min(threshold, calibration.threshold(model_key, identification_fmr))
    )
    dist = distances(queries, load_vectors(session, targets.face_uids, models), model_key)
    confidence = calibration.confidence(model_key, dist)
    results = []
    for q, query_uid in enumerate(query_uids):
        best: dict[str, dict] = {}  # one entry per person (by_person targets) or per face
        for t, target_uid in enumerate(targets.face_uids):
            if target_uid == query_uid:
                continue  # a face always matches itself; that says nothing
            key = f"p:{targets.person_ids[t]}" if targets.by_person[t] else f"f:{target_uid}"
            if key not in best or dist[q, t] < best[key]["distance"]:
                best[key] = {
                    "face_uuid": target_uid,
                    "person_id": targets.person_ids[t],
                    "distance": float(dist[q, t]),
                    "confidence": round(float(confidence[q, t]), 4),
                    "is_match": bool(dist[q, t] <= (open_threshold if targets.open_set[t] else threshold)),
                }
        matches = sorted(best.values(), key=lambda m: m["distance"])
        matches = [m for m in matches if m["confidence"] >= params.min_match_score][: params.max_results]
        for match in matches:
            match["distance"] = round(match["distance"], 5)
        results.append({"face_uuid": query_uid, "matches": matches})
    answer = {
        "profile": settings.embedding_profile,
        "fmr": params.fmr if params.raw_threshold is None else None,
        "threshold": round(float(threshold), 5),
        "results": results,
    }
    if any(targets.open_set):
        answer["identification"] = {
            "gallery_size": targets.gallery_size,
            "fpir": params.fpir,
            "fmr": identification_fmr if params.raw_threshold is None else None,
            "threshold": round(float(open_threshold), 5),
        }
    return answer
