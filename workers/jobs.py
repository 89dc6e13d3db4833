"""Job state transitions, shared by image and recognition jobs.

A job is claimed with one conditional UPDATE (queued, or processing with an expired lease); the attempt
number it sets is the fencing token: a worker whose lease expired and was taken over cannot overwrite
the newer attempt's result.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from schema.errors import ErrorCode, JobStatus
from schema.tables import Image, RecognizeJob, utcnow

Job = type[Image] | type[RecognizeJob]


def claim(session: Session, model: Job, uid: str, lease_s: int) -> Image | RecognizeJob | None:
    now = utcnow()
    claimable = or_(
        model.status == JobStatus.QUEUED, and_(model.status == JobStatus.PROCESSING, model.lease_until < now)
    )
    result = session.execute(
        update(model)
        .execution_options(synchronize_session=False)
        .where(model.uid == uid, claimable)
        .values(
            status=JobStatus.PROCESSING,
            lease_until=now + timedelta(seconds=lease_s),
            attempts=model.attempts + 1,
            updated_at=now,
        )
    )
    if result.rowcount == 0:
        return None
    return session.get(model, uid, populate_existing=True)


def lock_if_current(session: Session, model: Job, uid: str, attempt: int) -> Image | RecognizeJob | None:
    """Lock the row for the final write, if this attempt still owns it."""
    return session.execute(
        select(model)
        .where(model.uid == uid, model.status == JobStatus.PROCESSING, model.attempts == attempt)
        .with_for_update()
    ).scalar_one_or_none()


def finish(job: Image | RecognizeJob, code: ErrorCode | None = None, message: str | None = None) -> None:
    now = utcnow()
    job.status = JobStatus.DONE if code is None else JobStatus.ERROR
    job.error_code = None if code is None else code.v1
    job.error_message = message
    job.lease_until = None
    job.updated_at = now
    job.finished_at = now


def release(session: Session, model: Job, uid: str, attempt: int) -> None:
    """Give a job back to the queue after an unexpected failure (its message is re-sent by a retry)."""
    session.execute(
        update(model)
        .execution_options(synchronize_session=False)
        .where(model.uid == uid, model.status == JobStatus.PROCESSING, model.attempts == attempt)
        .values(status=JobStatus.QUEUED, lease_until=None, updated_at=utcnow())
    )
