"""Job state transitions, shared by image and recognition jobs.

A job is claimed with one conditional UPDATE (queued, or processing with an expired lease); the attempt
number it sets is the fencing token: a worker whose lease expired and was taken over cannot overwrite
the newer attempt's result. While the work runs, the lease is renewed, so only a dead worker's
lease ever lapses, however long the job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from schema.db import is_outage, session_scope
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.tables import Image, RecognizeJob, utcnow

log = logging.getLogger(__name__)
Job = type[Image] | type[RecognizeJob]


def claim(
    session: Session, model: Job, uid: str, lease_s: int, resume: int | None = None
) -> Image | RecognizeJob | None:
    """Take the job with a new attempt; or, with `resume`, carry on that attempt of ours (a retry after a
    database outage, whose lease we still hold) without counting another attempt."""
    now = utcnow()
    claimable = or_(
        model.status == JobStatus.QUEUED, and_(model.status == JobStatus.PROCESSING, model.lease_until < now)
    )
    values = {
        "status": JobStatus.PROCESSING,
        "lease_until": now + timedelta(seconds=lease_s),
        "updated_at": now,
    }
    if resume is not None:
        ours = and_(model.status == JobStatus.PROCESSING, model.attempts == resume)
        job = _update_returning(session, model, and_(model.uid == uid, ours), values)
        if job is not None:
            return job
    return _update_returning(
        session, model, and_(model.uid == uid, claimable), {**values, "attempts": model.attempts + 1}
    )


def _update_returning(session: Session, model: Job, where: Any, values: dict) -> Image | RecognizeJob | None:
    """One conditional UPDATE that hands back the updated row (one round trip), or None if none matched."""
    return session.execute(
        update(model)
        .where(where)
        .values(values)
        .returning(model)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).scalar_one_or_none()


def renew(session: Session, model: Job, uid: str, attempt: int, lease_s: int) -> bool:
    """Extend the lease of our attempt; False once the job is no longer ours."""
    result = session.execute(
        update(model)
        .execution_options(synchronize_session=False)
        .where(model.uid == uid, model.status == JobStatus.PROCESSING, model.attempts == attempt)
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return result.rowcount > 0


@contextmanager
def renewing_lease(model: Job, uid: str, attempt: int, lease_s: int) -> Iterator[None]:
    """Renew the lease every lease_s / 3 while the body runs (a thread: the work itself never yields)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                with session_scope() as session:
                    if not renew(session, model, uid, attempt, lease_s):
                        return  # superseded or finished: the final write is fenced anyway
            except Exception as error:  # database restarting: try again at the next beat
                log.warning("lease renewal of %s failed: %s", uid, error)

    thread = threading.Thread(target=beat, name=f"lease-{uid[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


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


# Faults of the environment, not of the job: the database away (schema.db.is_outage), the broker, the
# network, a disk, memory.
TRANSIENT = (BrokerError, RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, MemoryError)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying could help. Everything else (a bug, a value the database refuses) fails the same
    way again, so the job ends at once instead of being retried max_attempts times."""
    return is_outage(exc) or isinstance(exc, TRANSIENT)


def unexpected_error(exc: BaseException, what: str) -> FacequeueError:
    return FacequeueError(ErrorCode.PROCESSING_FAILED, f"{what}: {type(exc).__name__}")


def claim_queued(session: Session, queue: str, limit: int, lease_s: int) -> list[Image]:
    """Claim up to `limit` of the oldest queued image jobs of a queue, for one micro-batch.

    SKIP LOCKED lets concurrent workers take disjoint rows without waiting on each other (Postgres; SQLite
    serialises writers anyway); the conditional UPDATE is the claim itself, exactly as in `claim`.
    """
    if limit <= 0:
        return []
    waiting = and_(Image.status == JobStatus.QUEUED, Image.queue == queue)
    uids = list(
        session.execute(
            select(Image.uid)
            .where(waiting)
            .order_by(Image.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not uids:
        return []
    now = utcnow()
    return list(
        session.execute(
            update(Image)
            .where(Image.uid.in_(uids), waiting)
            .values(
                status=JobStatus.PROCESSING,
                lease_until=now + timedelta(seconds=lease_s),
                attempts=Image.attempts + 1,
                updated_at=now,
            )
            .returning(Image)
            .execution_options(synchronize_session=False, populate_existing=True)
        ).scalars()
    )


def renew_many(session: Session, model: Job, owned: list[tuple[str, int]], lease_s: int) -> int:
    """Extend the leases of jobs this attempt still owns (a long micro-batch); returns how many it kept."""
    until = utcnow() + timedelta(seconds=lease_s)
    kept = 0
    for uid, attempt in owned:
        kept += session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(model.uid == uid, model.status == JobStatus.PROCESSING, model.attempts == attempt)
            .values(lease_until=until)
        ).rowcount
    return kept
