"""One vector index per (tenant, namespace, model), kept in step with Postgres (the source of truth).

Each worker process keeps the indexes it has searched. An index is built from Postgres the first time,
saved under FACEQUEUE_HOME/indexes and memory-mapped (so processes on one host share its pages), then
caught up before every search with the faces changed (or deleted: tombstones) since it was last synced:
enrolments and erasures are visible to the next search, without rebuilding. Catch-up re-reads a window before the last sync, because a
transaction that committed late may carry an older updated_at; re-adding a face is idempotent.
"""

from __future__ import annotations

import fcntl
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.tables import Embedding, Face, FaceTombstone, Person, utcnow
from workers.recognition.index import VectorIndex

CATCH_UP_OVERLAP = timedelta(minutes=5)
RESAVE_AFTER_CHANGES = 10_000  # a saved index this far behind is written again, so new processes start close


@dataclass
class _Entry:
    index: VectorIndex
    synced_at: datetime
    changes_since_save: int = 0


class NamespaceIndexes:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "indexes"
        self.entries: dict[tuple[int, int, str], _Entry] = {}

    def get(self, session: Session, tenant_id: int, namespace_id: int, model: str) -> VectorIndex:
        key = (tenant_id, namespace_id, model)
        entry = self.entries.get(key) or self._open(session, key)
        self.entries[key] = entry
        self._catch_up(session, key, entry)
        return entry.index

    def _path(self, key: tuple[int, int, str]) -> Path:
        tenant_id, namespace_id, model = key
        return self.root / f"t{tenant_id}-ns{namespace_id}-{model}"

    def _open(self, session: Session, key: tuple[int, int, str]) -> _Entry:
        path = self._path(key)
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            synced_at = datetime.fromisoformat(json.loads(meta.read_text())["synced_at"])
            index = VectorIndex.load(path, view=True, ann_min_size=self.settings.ann_min_size)
            return _Entry(index, synced_at)
        entry = _Entry(VectorIndex(ann_min_size=self.settings.ann_min_size), synced_at=datetime.min)
        self._catch_up(session, key, entry)
        self._save(key, entry)
        return entry

    def _catch_up(self, session: Session, key: tuple[int, int, str], entry: _Entry) -> None:
        tenant_id, namespace_id, model = key
        now = utcnow()
        since = entry.synced_at - CATCH_UP_OVERLAP if entry.synced_at != datetime.min else None
        query = (
            select(Face.id, Person.namespace_id, Embedding.vector)
            .join(Embedding, (Embedding.face_uid == Face.uid) & (Embedding.model_id == model))
            .outerjoin(Person, Face.person_id == Person.id)
            .where(Face.tenant_id == tenant_id)
        )
        if since is None:
            query = query.where(Person.namespace_id == namespace_id)  # first build: only this namespace
        else:
            query = query.where(Face.updated_at >= _naive_if_sqlite(session, since))
        rows = session.execute(query).all()
        inside = [(face_id, vector) for face_id, ns, vector in rows if ns == namespace_id]
        gone = [face_id for face_id, ns, _ in rows if ns != namespace_id]
        if since is not None:  # deleted faces: no row left to read, a tombstone says so
            gone += session.execute(
                select(FaceTombstone.face_id).where(
                    FaceTombstone.tenant_id == tenant_id,
                    FaceTombstone.deleted_at >= _naive_if_sqlite(session, since),
                )
            ).scalars()
        outside = np.array(gone, dtype=np.int64)
        if len(outside):
            entry.index.remove(outside)
        if inside:
            ids = np.array([face_id for face_id, _ in inside], dtype=np.int64)
            vectors = np.stack([np.frombuffer(vector, dtype="<f4") for _, vector in inside])
            entry.index.add(ids, vectors)
        entry.synced_at = now
        entry.changes_since_save += len(rows) if since is not None else 0
        if entry.changes_since_save >= RESAVE_AFTER_CHANGES:
            self._save(key, entry)

    def _save(self, key: tuple[int, int, str], entry: _Entry) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one writer per index file at a time, across processes
            entry.index.save(path)
            path.with_suffix(".json").write_text(json.dumps({"synced_at": entry.synced_at.isoformat()}))
        entry.changes_since_save = 0


def _naive_if_sqlite(session: Session, moment: datetime) -> datetime:
    # SQLite stores datetimes without their zone; compare like with like.
    return moment.replace(tzinfo=None) if session.bind.dialect.name == "sqlite" else moment


_indexes: NamespaceIndexes | None = None


def namespace_indexes(settings: Settings) -> NamespaceIndexes:
    global _indexes
    if _indexes is None:
        _indexes = NamespaceIndexes(settings)
    return _indexes
