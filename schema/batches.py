"""Batches: a tenant's named group of uploads. Counts, drain detection and cancellation, shared by api and
workers. An image names its batch by `images.batch`; the `batches` row holds per-batch settings and the
durable state of the one drain callback."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.persons import _get_or_create
from schema.tables import Batch, Face, Image, utcnow

BATCH_NAME = re.compile(r"[A-Za-z0-9._-][A-Za-z0-9 ._-]{0,99}")
CANCELLED_STATUS = "cancelled"  # reported in counts; the image row itself is status error, code CANCELLED


def parse_batch_name(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    if not BATCH_NAME.fullmatch(name):
        raise FacequeueError(
            ErrorCode.INVALID_REQUEST,
            "batch must be 1-100 letters, digits, spaces, '.', '_' or '-' (not starting with a space)",
        )
    return name


def ensure_batch(session: Session, tenant_id: int, name: str, callback_url: str | None = None) -> int:
    """Create the batch row if new; a callback_url given sets (or replaces) the batch's drain callback."""
    batch_id = _get_or_create(session, Batch, {"tenant_id": tenant_id, "name": name}, ["tenant_id", "name"])
    if callback_url:
        session.execute(
            update(Batch)
            .execution_options(synchronize_session=False)
            .where(Batch.id == batch_id)
            .values(callback_url=callback_url)
        )
    return batch_id


def _in_batch(tenant_id: int, name: str) -> Any:
    return and_(Image.tenant_id == tenant_id, Image.batch == name)


def _pending(session: Session, tenant_id: int, name: str, exclude_uid: str | None = None) -> bool:
    query = select(Image.uid).where(
        _in_batch(tenant_id, name), Image.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING])
    )
    if exclude_uid is not None:
        query = query.where(Image.uid != exclude_uid)
    return session.execute(query.limit(1)).first() is not None


def claim_drain_callback(
    session: Session, tenant_id: int, name: str, finishing_uid: str | None
) -> int | None:
    """In the transaction that finishes an image (or cancels a batch): if that leaves the batch with nothing
    queued or processing and the batch has a callback not yet fired, mark it pending (once, durably) and
    return the batch id to enqueue after commit. The batch row is locked so that two workers finishing
    the last two images cannot both miss (or both fire) the drain."""
    candidate = session.execute(
        select(Batch.id).where(
            Batch.tenant_id == tenant_id,
            Batch.name == name,
            Batch.callback_url.is_not(None),
            Batch.callback_status.is_(None),
        )
    ).scalar_one_or_none()
    if candidate is None:
        return None
    batch = session.execute(select(Batch).where(Batch.id == candidate).with_for_update()).scalar_one()
    if batch.callback_status is not None or _pending(session, tenant_id, name, finishing_uid):
        return None
    batch.callback_status = "pending"
    batch.drained_at = batch.updated_at = utcnow()
    return batch.id


def get_batch(session: Session, tenant_id: int, name: str) -> Batch:
    batch = session.execute(
        select(Batch).where(Batch.tenant_id == tenant_id, Batch.name == name)
    ).scalar_one_or_none()
    if batch is None:
        raise FacequeueError(ErrorCode.NOT_FOUND, f"no batch {name!r} for this api key")
    return batch


def _seconds(start: Any, end: Any) -> float:
    return (end - start).total_seconds() if start and end else 0.0


def batch_summary(session: Session, batch: Batch) -> dict[str, Any]:
    """Counts by status (cancelled apart from error), faces found, times and throughput."""
    counts = dict.fromkeys(
        (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.DONE, JobStatus.ERROR, CANCELLED_STATUS), 0
    )
    cancelled = Image.error_code == ErrorCode.CANCELLED.v1
    rows = session.execute(
        select(Image.status, cancelled, func.count())
        .where(_in_batch(batch.tenant_id, batch.name))
        .group_by(Image.status, cancelled)
    ).all()
    for status, is_cancelled, count in rows:
        counts[CANCELLED_STATUS if is_cancelled else status] += count
    started, updated, first_done, last_done = session.execute(
        select(
            func.min(Image.created_at),
            func.max(Image.updated_at),
            func.min(Image.finished_at),
            func.max(Image.finished_at),
        ).where(_in_batch(batch.tenant_id, batch.name))
    ).one()
    faces = session.execute(
        select(func.count(Face.id))
        .join(Image, Image.uid == Face.image_uid)
        .where(_in_batch(batch.tenant_id, batch.name))
    ).scalar_one()
    finished = counts[JobStatus.DONE] + counts[JobStatus.ERROR]
    # Throughput over the batch's working time: from its first upload to its last finished image.
    elapsed = _seconds(started, last_done)
    return {
        "batch": batch.name,
        "total": sum(counts.values()),
        "counts": counts,
        "faces": faces,
        "drained": counts[JobStatus.QUEUED] + counts[JobStatus.PROCESSING] == 0,
        "created_at": batch.created_at.isoformat(),
        "started_at": started.isoformat() if started else None,
        "updated_at": updated.isoformat() if updated else None,
        "first_finished_at": first_done.isoformat() if first_done else None,
        "last_finished_at": last_done.isoformat() if last_done else None,
        "images_per_s": round(finished / elapsed, 3) if elapsed > 0 else None,
        "faces_per_s": round(faces / elapsed, 3) if elapsed > 0 else None,
        "callback_url": batch.callback_url,
        "callback_status": batch.callback_status,
        "callback_error": batch.callback_error,
    }


def cancel_queued(session: Session, tenant_id: int, name: str) -> int:
    """Queued images of the batch end as error CANCELLED (a worker cannot claim them any more; their broker
    messages are dropped as 'not claimable'). Their dedupe key is cleared so the same bytes may be
    uploaded again later. Images already processing finish normally."""
    now = utcnow()
    result = session.execute(
        update(Image)
        .execution_options(synchronize_session=False)
        .where(_in_batch(tenant_id, name), Image.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.ERROR,
            error_code=ErrorCode.CANCELLED.v1,
            error_message=ErrorCode.CANCELLED.message,
            dedupe_key=None,
            lease_until=None,
            updated_at=now,
            finished_at=now,
        )
    )
    return result.rowcount
