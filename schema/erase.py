"""Deletion (erasure requests): media, faces, persons and namespaces, with their bytes and vectors.

A deleted face leaves a tombstone so that every worker's vector index drops its id on the next catch-up
(`workers.recognition.namespaces`); Postgres forgets the face, its embeddings and, once no image of any
tenant refers to them, the original bytes.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.blobs import forget_blob
from schema.errors import ErrorCode, FacequeueError
from schema.persons import ALL, PersonId, namespace_id
from schema.tables import Face, FaceTombstone, Image, Namespace, Person, utcnow


def delete_faces(session: Session, tenant_id: int, where: object) -> int:
    """Delete the tenant's faces matching `where` (a SQL condition on Face); returns how many."""
    ids = list(session.execute(select(Face.id).where(Face.tenant_id == tenant_id, where)).scalars())
    if not ids:
        return 0
    now = utcnow()
    session.add_all(FaceTombstone(face_id=i, tenant_id=tenant_id, deleted_at=now) for i in ids)
    session.execute(delete(Face).where(Face.id.in_(ids)).execution_options(synchronize_session=False))
    return len(ids)


def delete_image(session: Session, settings: Settings, image: Image) -> int:
    """The image, its faces (with vectors) and, when no other image uses them, its bytes."""
    faces = delete_faces(session, image.tenant_id, Face.image_uid == image.uid)
    sha256 = image.sha256
    session.delete(image)
    session.flush()
    if sha256 and not session.execute(select(func.count()).where(Image.sha256 == sha256)).scalar_one():
        forget_blob(session, settings, sha256)
    return faces


def delete_persons(session: Session, tenant_id: int, pid: PersonId, with_faces: bool) -> tuple[int, int]:
    """`name@ns` or `all@ns`: the persons go; their faces are unassigned, or deleted too. (persons, faces)"""
    ns = namespace_id(session, tenant_id, pid.namespace, create=False)
    persons = select(Person.id).where(Person.namespace_id == ns)
    if pid.name != ALL:
        persons = persons.where(Person.name == pid.name)
    person_ids = list(session.execute(persons).scalars()) if ns is not None else []
    if not person_ids:
        raise FacequeueError(ErrorCode.NOT_FOUND, f"no person {str(pid)!r}")
    faces = Face.person_id.in_(person_ids)
    if with_faces:
        face_count = delete_faces(session, tenant_id, faces)
    else:  # updated_at moves, so the vector indexes drop them from this namespace on catch-up
        face_count = session.execute(
            update(Face)
            .where(Face.tenant_id == tenant_id, faces)
            .values(person_id=None, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
    session.execute(
        delete(Person).where(Person.id.in_(person_ids)).execution_options(synchronize_session=False)
    )
    return len(person_ids), face_count


def delete_namespace(session: Session, tenant_id: int, name: str, with_faces: bool) -> tuple[int, int]:
    ns = namespace_id(session, tenant_id, name, create=False)
    if ns is None:
        raise FacequeueError(ErrorCode.NOT_FOUND, f"no namespace {name!r}")
    has_persons = session.execute(select(Person.id).where(Person.namespace_id == ns).limit(1)).first()
    counts = delete_persons(session, tenant_id, PersonId(ALL, name), with_faces) if has_persons else (0, 0)
    session.execute(delete(Namespace).where(Namespace.id == ns))
    return counts


def list_namespaces(session: Session, tenant_id: int) -> list[dict]:
    rows = session.execute(
        select(Namespace.name, func.count(func.distinct(Person.id)), func.count(Face.id))
        .outerjoin(Person, Person.namespace_id == Namespace.id)
        .outerjoin(Face, Face.person_id == Person.id)
        .where(Namespace.tenant_id == tenant_id)
        .group_by(Namespace.name)
        .order_by(Namespace.name)
    ).all()
    return [{"namespace": name, "persons": persons, "faces": faces} for name, persons, faces in rows]


# Vendor tokens that expire: upload option naming the detect request → lifetime. Face++: a face_token lives
# 72 h unless it is added to a FaceSet; Azure: a faceId lives 24 h unless it is persisted.
EXPIRING = {"facepp_request": timedelta(hours=72), "azure_request": timedelta(hours=24)}


def purge_expired_tokens(session: Session, settings: Settings, limit: int = 1000) -> int:
    """Erase what expired vendor tokens point at: the faces of vendor detects past their lifetime that no
    FaceSet / person group (no person) holds, and the image with its bytes once none of its faces is held.
    Returns faces."""
    held = select(Face.id).where(Face.image_uid == Image.uid, Face.person_id.is_not(None)).exists()
    loose = select(Face.id).where(Face.image_uid == Image.uid, Face.person_id.is_(None)).exists()
    deleted = 0
    for option, lifetime in EXPIRING.items():
        expired = select(Image).where(
            Image.options[option].as_string().is_not(None),
            Image.created_at < utcnow() - lifetime,
            Image.status.in_(("done", "error")),
        )
        for image in list(session.execute(expired.where(~held).limit(limit)).scalars()):
            deleted += delete_image(session, settings, image)
        for image in list(session.execute(expired.where(held, loose).limit(limit)).scalars()):
            deleted += delete_faces(
                session, image.tenant_id, (Face.image_uid == image.uid) & Face.person_id.is_(None)
            )
    return deleted
