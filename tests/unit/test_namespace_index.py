"""Namespace indexes follow Postgres: built once, caught up incrementally, saved and re-opened."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.persons import set_person
from schema.tables import Base, Embedding, Face, Image, Tenant
from workers.recognition.namespaces import NamespaceIndexes

MODEL = "facenet-keras-2024"


@pytest.fixture
def session(tmp_path) -> Session:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'ns.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as db:
        db.add(Tenant(id=1, name="t"))
        db.add(Image(uid="00000000-0000-0000-0000-000000000001", tenant_id=1))
        db.commit()
        yield db


def add_faces(session: Session, vectors: np.ndarray) -> list[str]:
    uids = []
    for i, vector in enumerate(vectors):
        uid = f"00000000-0000-0000-0001-{i:012d}"
        face = Face(
            uid=uid,
            image_uid="00000000-0000-0000-0000-000000000001",
            tenant_id=1,
            index=i,
            x1=0,
            y1=0,
            x2=1,
            y2=1,
            score=1.0,
        )
        face.embeddings = [Embedding(face_uid=uid, model_id=MODEL, vector=vector.astype("<f4").tobytes())]
        session.add(face)
        uids.append(uid)
    session.commit()
    return uids


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("ann_min_size", [1000, 10])
def test_index_follows_enrolment(session: Session, tmp_path, ann_min_size: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    vectors = unit(rng, 40)
    uids = add_faces(session, vectors)
    set_person(session, 1, uids[:20], "a@ns")
    session.commit()
    settings = Settings(home=tmp_path, ann_min_size=ann_min_size)
    indexes = NamespaceIndexes(settings)
    index = indexes.get(session, 1, 1, MODEL)
    assert len(index) == 20
    ids, dist = index.search(vectors[:1], 1)
    assert dist[0, 0] == pytest.approx(0, abs=1e-3)

    # Enrol more, move one face out: the next search sees both without a rebuild.
    set_person(session, 1, uids[20:30], "b@ns")
    set_person(session, 1, uids[:1], "c@elsewhere")
    session.commit()
    index = indexes.get(session, 1, 1, MODEL)
    assert len(index) == 29
    ids, _ = index.search(vectors[:1], 1)
    first_id = session.query(Face.id).filter(Face.uid == uids[0]).scalar()
    assert ids[0, 0] != first_id, "a face that left the namespace is no longer found in it"

    # A new process opens the saved index and catches up from its sync time.
    reopened = NamespaceIndexes(settings).get(session, 1, 1, MODEL)
    assert len(reopened) == 29

    # Erasure: deleted faces leave the index itself (not only the answers), in this process and a new one.
    from schema.erase import delete_faces

    gone = uids[1:6]
    gone_ids = {session.query(Face.id).filter(Face.uid == uid).scalar() for uid in gone}
    delete_faces(session, 1, Face.uid.in_(gone))
    session.commit()
    assert len(indexes.get(session, 1, 1, MODEL)) == 24
    fresh = NamespaceIndexes(settings).get(session, 1, 1, MODEL)
    assert len(fresh) == 24
    found, _ = fresh.search(vectors[1:6], 24)
    assert not gone_ids & set(found.ravel().tolist())
