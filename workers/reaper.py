"""Nothing stays stuck: jobs whose worker died (lease expired) or whose message was lost are re-sent.

Every worker runs this loop in a thread; the conditional UPDATEs make concurrent reapers harmless, and a
duplicate message is harmless too (a task only works on a job it can claim).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, func, select, update

from facequeue.settings import Settings, get_settings
from schema.db import session_scope
from schema.errors import JobStatus
from schema.tables import Image, RecognizeJob, utcnow
from workers.celery_app import IMAGES_QUEUE, RECOGNIZE_QUEUE, app, enqueue_image, enqueue_recognize

log = logging.getLogger(__name__)
BATCH = 1000


def broker_depth(queue: str) -> int:
    # Not passive: an empty Redis queue has no key, and a passive declare would call it missing.
    with app.connection_for_write() as connection:
        return connection.default_channel.queue_declare(
            queue=queue, durable=True, auto_delete=False
        ).message_count


def requeue_expired(model: type[Image] | type[RecognizeJob]) -> list[str]:
    """Jobs whose worker died mid-task (lease expired) go back to queued."""
    now = utcnow()
    expired = and_(model.status == JobStatus.PROCESSING, model.lease_until < now)
    with session_scope() as session:
        uids = list(session.execute(select(model.uid).where(expired).limit(BATCH)).scalars())
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(model.uid.in_(uids), expired)
            .values(status=JobStatus.QUEUED, lease_until=None, updated_at=now)
        )
    return uids


def lost_messages(settings: Settings, model: type[Image] | type[RecognizeJob], queue: str) -> list[str]:
    """Queued jobs whose message is gone (api died after commit, broker restarted without persistence).

    Only the shortfall between old queued rows and the broker's queue depth is re-sent, oldest first,
    so a long healthy backlog is never flooded with duplicates.
    """
    now = utcnow()
    old = and_(
        model.status == JobStatus.QUEUED,
        model.updated_at < now - timedelta(seconds=settings.requeue_queued_after_s),
    )
    with session_scope() as session:
        waiting = session.execute(select(func.count()).select_from(model).where(old)).scalar_one()
        missing = min(BATCH, waiting - broker_depth(queue)) if waiting else 0
        if missing <= 0:
            return []
        uids = list(
            session.execute(select(model.uid).where(old).order_by(model.updated_at).limit(missing)).scalars()
        )
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(model.uid.in_(uids))
            .values(updated_at=now)
        )
    return uids


def reap_once(settings: Settings) -> int:
    sent = 0
    jobs: list[tuple[type[Image] | type[RecognizeJob], str, Callable[[str], None]]] = [
        (Image, IMAGES_QUEUE, enqueue_image),
        (RecognizeJob, RECOGNIZE_QUEUE, enqueue_recognize),
    ]
    for model, queue, enqueue in jobs:
        uids = requeue_expired(model) + lost_messages(settings, model, queue)
        for uid in uids:
            enqueue(uid)
        if uids:
            log.warning("reaper re-sent %d %s jobs", len(uids), model.__tablename__)
        sent += len(uids)
    return sent


def start_reaper_thread() -> threading.Thread:
    settings = get_settings()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.reaper_interval_s):
            try:
                reap_once(settings)
            except Exception:  # the database or broker may be briefly away; try again next interval
                log.exception("reaper sweep failed")

    thread = threading.Thread(target=loop, name="facequeue-reaper", daemon=True)
    thread.start()
    return thread
