"""Content-addressed storage of original image bytes, readable by workers on any host.

"db" keeps bytes in the blobs table (default: nothing else to run); "dir" keeps them in a shared directory
(a volume mounted by api and workers). Either way the blobs row records size and where the bytes are.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.tables import Blob


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_path(settings: Settings, sha256: str) -> Path:
    root = settings.blob_dir or settings.home / "blobs"
    return root / sha256[:2] / sha256


def put_blob(session: Session, settings: Settings, data: bytes, sha256: str | None = None) -> str:
    """Store bytes (idempotent: the same bytes twice are one blob) and return their SHA-256.

    Bytes dropped by the retention setting come back with any new upload of them, whoever uploaded them
    first: a new job never depends on another job's (or tenant's) history. The upsert locks the row, and
    drop_blob takes the same lock before deciding, so a drop and a new upload cannot interleave.
    """
    sha256 = sha256 or sha256_hex(data)
    store = settings.blob_store
    values = {"sha256": sha256, "size": len(data), "data": data if store == "db" else None, "store": store}
    insert = (pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert)(Blob).values(
        **values
    )
    # Concurrent uploads of the same bytes must not fail each other; only a dropped row is brought back.
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["sha256"],
            set_={"data": insert.excluded.data, "store": insert.excluded.store},
            where=Blob.store == "dropped",
        )
    )
    if store == "dir":  # written after the row lock is held: a concurrent drop finishes first or waits
        path = _blob_path(settings, sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
    return sha256


def get_blob(session: Session, settings: Settings, sha256: str) -> bytes | None:
    """The original bytes, or None when they were dropped after processing."""
    blob = session.execute(select(Blob.store, Blob.data).where(Blob.sha256 == sha256)).one_or_none()
    if blob is None:
        return None
    if blob.store == "db":
        return blob.data
    if blob.store == "dir":
        path = _blob_path(settings, sha256)
        return path.read_bytes() if path.exists() else None
    return None


def lock_blob(session: Session, sha256: str) -> Blob | None:
    """Take the blob row's lock (put_blob's upsert takes it too) before deciding to drop its bytes."""
    return session.execute(select(Blob).where(Blob.sha256 == sha256).with_for_update()).scalar_one_or_none()


def drop_blob(session: Session, settings: Settings, sha256: str) -> None:
    """Forget the original bytes (retention setting), keeping the row so the checksum stays known.
    Call lock_blob first, then check nobody still needs the bytes, then drop."""
    blob = lock_blob(session, sha256)
    if blob is None:
        return
    if blob.store == "dir":
        _blob_path(settings, sha256).unlink(missing_ok=True)
    blob.data = None
    blob.store = "dropped"


def forget_blob(session: Session, settings: Settings, sha256: str) -> None:
    """Delete the bytes and the row (erasure: the last image using them is gone)."""
    blob = session.get(Blob, sha256)
    if blob is None:
        return
    if blob.store == "dir":
        _blob_path(settings, sha256).unlink(missing_ok=True)
    session.delete(blob)
