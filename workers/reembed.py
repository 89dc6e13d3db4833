"""Re-embedding stored faces for another embedding profile, from the original images.

A face keeps its uid, box, points and person; only vectors are added, one Embedding row per missing model
id. The stored 5 detector points place the chips, so the faces are the same faces (no new detection).
A face whose image's original bytes were dropped (FACEQUEUE_KEEP_ORIGINALS=false) cannot be re-embedded;
`plan` lists those so the operator can re-upload them. Work goes to the `batch` queue one image per task;
tasks are idempotent (a vector present is left as it is), so running `facequeue reembed` again resumes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.blobs import get_blob
from schema.db import session_scope
from schema.tables import Blob, Embedding, Face, Image, Namespace, Person, Tenant, utcnow
from workers.models.yunet import Detections
from workers.pipeline.decode import decode_image
from workers.pipeline.points import LANDMARK5_TYPES
from workers.recognition.profiles import profile_models

log = logging.getLogger(__name__)


@dataclass
class Stranded:
    face_uid: str
    image_uid: str
    person_id: str | None  # "name@namespace" when enrolled


@dataclass
class Plan:
    models: tuple[str, ...]
    images: dict[str, int] = field(default_factory=dict)  # image uid -> faces to re-embed in it
    stranded: list[Stranded] = field(default_factory=list)  # faces whose original is gone

    @property
    def faces(self) -> int:
        return sum(self.images.values())


def _lacking(session: Session, models: tuple[str, ...], namespace: str | None, tenant: str | None):  # noqa: ANN202
    """Select of faces lacking at least one of `models`' vectors (with their image, blob and person)."""
    have = (
        select(func.count())
        .select_from(Embedding)
        .where(Embedding.face_uid == Face.uid, Embedding.model_id.in_(models))
        .scalar_subquery()
    )
    query = (
        select(Face.uid, Face.image_uid, Blob.store, Blob.data.is_(None), Person.name, Namespace.name)
        .join(Image, Image.uid == Face.image_uid)
        .outerjoin(Blob, Blob.sha256 == Image.sha256)
        .outerjoin(Person, Person.id == Face.person_id)
        .outerjoin(Namespace, Namespace.id == Person.namespace_id)
        .where(have < len(models))
    )
    if namespace is not None:
        query = query.where(Namespace.name == namespace)
    if tenant is not None:
        query = query.join(Tenant, Tenant.id == Face.tenant_id).where(Tenant.name == tenant)
    return query


def _original_kept():  # noqa: ANN202
    """Blob rows whose bytes are still stored (in the database, or in the blob directory)."""
    return or_(and_(Blob.store == "db", Blob.data.is_not(None)), Blob.store == "dir")


def plan(
    session: Session,
    settings: Settings,
    profile: str,
    namespace: str | None = None,
    tenant: str | None = None,
) -> Plan:
    """Faces lacking a vector of `profile`, by image; and the faces that cannot get one."""
    models = profile_models(profile, settings.int8_embeddings)
    out = Plan(models)
    for face_uid, image_uid, store, no_data, name, ns in session.execute(
        _lacking(session, models, namespace, tenant)
    ):
        kept = store == "dir" or (store == "db" and not no_data)
        if kept:
            out.images[image_uid] = out.images.get(image_uid, 0) + 1
        else:
            out.stranded.append(Stranded(face_uid, image_uid, f"{name}@{ns}" if name is not None else None))
    return out


def remaining(
    session: Session,
    settings: Settings,
    profile: str,
    namespace: str | None = None,
    tenant: str | None = None,
) -> int:
    """Faces that still lack a vector of `profile` although their original is kept (progress)."""
    models = profile_models(profile, settings.int8_embeddings)
    query = _lacking(session, models, namespace, tenant).where(_original_kept())
    return session.execute(select(func.count()).select_from(query.subquery())).scalar_one()


def landmarks5(points: list[dict]) -> np.ndarray:
    """The detector's 5 points of a stored face, in landmarks5 order, from its Betaface point types."""
    by_type: dict[int, tuple[float, float]] = {}
    for p in points:
        by_type.setdefault(int(p["type"]), (float(p["x"]), float(p["y"])))
    missing = [t for t in LANDMARK5_TYPES if t not in by_type]
    if missing:
        raise ValueError(f"stored face lacks basic point types {missing}")
    return np.array([by_type[t] for t in LANDMARK5_TYPES], np.float32)


def reembed_image(image_uid: str, profile: str, settings: Settings) -> str:
    """Add the missing `profile` vectors to every face of one image. Idempotent."""
    from workers.pipeline.analyse import get_pipeline

    models = profile_models(profile, settings.int8_embeddings)
    with session_scope() as session:
        image = session.get(Image, image_uid)
        if image is None or image.sha256 is None:
            return "no such image"
        faces = [(f.uid, f.x1, f.y1, f.x2, f.y2, f.score, f.points) for f in image.faces]
        have = {
            (uid, model)
            for uid, model in session.execute(
                select(Embedding.face_uid, Embedding.model_id).where(
                    Embedding.face_uid.in_([f[0] for f in faces]), Embedding.model_id.in_(models)
                )
            )
        }
        data = get_blob(session, settings, image.sha256)
    todo = [f for f in faces if any((f[0], m) not in have for m in models)]
    if not todo:
        return "nothing to do"
    if data is None:
        log.warning("reembed: image %s: the original bytes were dropped; %d faces stay", image_uid, len(todo))
        return "original dropped"
    rgb = decode_image(data, settings.max_upload_bytes, settings.max_image_pixels).rgb
    detections = Detections(
        boxes=np.array([f[1:5] for f in todo], np.float32),
        scores=np.array([f[5] for f in todo], np.float32),
        landmarks=np.stack([landmarks5(f[6]) for f in todo]),
    )
    pipeline = get_pipeline(settings.model_copy(update={"embedding_profile": profile}))
    analysed = pipeline.analyse_detections(rgb, detections, set())
    with session_scope() as session:
        for (uid, *_), face in zip(todo, analysed, strict=True):
            for model in models:
                if (uid, model) not in have:
                    vector = np.asarray(face.embeddings[model], dtype="<f4").tobytes()
                    session.merge(Embedding(face_uid=uid, model_id=model, vector=vector))
        # Namespace indexes catch up on updated_at: the new vectors reach them at the next search.
        session.execute(update(Face).where(Face.uid.in_([f[0] for f in todo])).values(updated_at=utcnow()))
    return f"embedded {len(todo)} faces"
