"""Nothing stays stuck: jobs whose worker died (lease expired), messages the broker lost and callbacks that
are due are (re-)sent.

Every worker runs this loop in a thread, first at once when it starts, then every reaper_interval_s; the
conditional UPDATEs make concurrent reapers harmless, and a duplicate message is harmless too (a task only
works on a job or a delivery it can claim). After a broker outage or restart (it stopped answering, or
Redis reports a new run id) every queued job and due callback without a message is re-sent at once,
instead of waiting for requeue_queued_after_s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import and_, func, select, update

from facequeue.settings import Settings, get_settings
from schema.db import is_outage, session_scope
from schema.erase import purge_expired_tokens
from schema.errors import JobStatus
from schema.tables import Batch, Image, RecognizeJob, utcnow
from workers import callbacks
from workers.celery_app import (
    BULK_QUEUE,
    CALLBACKS_QUEUE,
    IMAGES_QUEUE,
    RECOGNIZE_QUEUE,
    RESENT,
    app,
    enqueue_batch_callback,
    enqueue_callback,
    enqueue_image,
    enqueue_recognize,
)

log = logging.getLogger(__name__)
BATCH = 1000
QUEUES = (IMAGES_QUEUE, BULK_QUEUE, RECOGNIZE_QUEUE, CALLBACKS_QUEUE)
PURGE_INTERVAL_S = 600.0  # expired vendor tokens are erased within 10 minutes of expiring


@dataclass
class BrokerView:
    depths: dict[str, int] = field(default_factory=dict)
    identity: str | None = None  # Redis run_id: changes when the server restarts


def broker_view() -> BrokerView:
    """Queue depths (and the server's identity), over one short-lived connection; raises if unreachable."""
    view = BrokerView()
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        channel = connection.default_channel
        for queue in QUEUES:
            # Not passive: an empty Redis queue has no key, and a passive declare would call it missing.
            view.depths[queue] = channel.queue_declare(
                queue=queue, durable=True, auto_delete=False
            ).message_count
        if getattr(connection.transport, "driver_type", "") == "redis":
            view.identity = channel.client.info("server").get("run_id")
    return view


def broker_depth(queue: str) -> int:
    return broker_view().depths[queue]


def requeue_expired(model: type[Image] | type[RecognizeJob], queue: str | None = None) -> list[str]:
    """Jobs whose worker died mid-task (lease expired) go back to queued."""
    now = utcnow()
    expired = and_(model.status == JobStatus.PROCESSING, model.lease_until < now)
    if queue is not None:
        expired = and_(expired, model.queue == queue)
    with session_scope() as session:
        uids = list(session.execute(select(model.uid).where(expired).limit(BATCH)).scalars())
        session.execute(
            update(model)
            .execution_options(synchronize_session=False)
            .where(model.uid.in_(uids), expired)
            .values(status=JobStatus.QUEUED, lease_until=None, updated_at=now)
        )
    return uids


def lost_messages(
    model: type[Image] | type[RecognizeJob], depth: int, min_age_s: float, queue: str | None = None
) -> list[str]:
    """Queued jobs whose message is gone (api died after commit, broker restarted without persistence).

    Only the shortfall between queued rows older than `min_age_s` and the broker's queue depth is
    re-sent, oldest first, so a long healthy backlog is never flooded with duplicates.
    """
    now = utcnow()
    old = and_(model.status == JobStatus.QUEUED, model.updated_at <= now - timedelta(seconds=min_age_s))
    if queue is not None:  # image jobs are split over the interactive and the bulk queue
        old = and_(old, model.queue == queue)
    with session_scope() as session:
        waiting = session.execute(select(func.count()).select_from(model).where(old)).scalar_one()
        missing = min(BATCH, waiting - depth)
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


def lost_batch_callbacks(settings: Settings) -> list[int]:
    """Batch drain callbacks marked pending (durably, with the drain) whose message never ran: the worker
    died between commit and send, or the broker lost it. Retries wait at most 300 s, so anything quiet
    for longer than that (and the queued-message delay) has no message left."""
    now = utcnow()
    quiet = and_(
        Batch.callback_status == "pending",
        Batch.updated_at < now - timedelta(seconds=max(330, settings.requeue_queued_after_s)),
    )
    with session_scope() as session:
        ids = list(session.execute(select(Batch.id).where(quiet).limit(BATCH)).scalars())
        session.execute(
            update(Batch)
            .execution_options(synchronize_session=False)
            .where(Batch.id.in_(ids))
            .values(updated_at=now)
        )
    return ids


def due_callbacks(depth: int) -> list[str]:
    """Due callbacks beyond the messages already queued for them (same shortfall rule as jobs)."""
    with session_scope() as session:
        missing = min(BATCH, callbacks.count_due(session) - depth)
        return callbacks.oldest_due(session, missing) if missing > 0 else []


def reap_once(settings: Settings, view: BrokerView, recovered: bool = False, expire: bool = True) -> int:
    """One sweep; `expire` False spares lapsed leases (their owners may not have renewed them yet)."""
    sent = 0
    min_age = 0 if recovered else settings.requeue_queued_after_s
    jobs: list[tuple[type[Image] | type[RecognizeJob], str, Callable[[str, int], None]]] = [
        (Image, IMAGES_QUEUE, lambda uid, priority: enqueue_image(uid, IMAGES_QUEUE, priority)),
        (Image, BULK_QUEUE, lambda uid, priority: enqueue_image(uid, BULK_QUEUE, priority)),
        (RecognizeJob, RECOGNIZE_QUEUE, enqueue_recognize),
    ]
    for model, queue, enqueue in jobs:
        per_queue = queue if model is Image else None
        uids = requeue_expired(model, per_queue) if expire else []
        # Jobs just requeued count as queued rows only in a recovery sweep (min_age 0); their messages
        # are about to be sent, so they are not missing.
        uids += lost_messages(model, view.depths[queue] + (len(uids) if recovered else 0), min_age, per_queue)
        for uid in uids:
            enqueue(uid, RESENT)
        if uids:
            log.warning("reaper re-sent %d %s jobs", len(uids), model.__tablename__)
        sent += len(uids)
    uids = due_callbacks(view.depths[CALLBACKS_QUEUE])
    for uid in uids:
        enqueue_callback(uid, RESENT)
    if uids:
        log.info("reaper sent %d due callbacks", len(uids))
    for batch_id in lost_batch_callbacks(settings):
        enqueue_batch_callback(batch_id)
        sent += 1
    return sent + len(uids)


class Reaper:
    """Remembers what the broker looked like at the last sweep, to notice that it came back; and whether
    the database was away: while it is, no worker can renew a lease, so after it returns lapsed leases
    are spared for half a lease (owners renew every third of one) instead of re-running live jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.identity: str | None = None
        self.recovering = True  # the first sweep of a worker re-sends at once what is missing
        self.database_away = False
        self.spare_leases_until = 0.0

    def sweep(self) -> int:
        try:
            view = broker_view()
        except Exception as exc:
            if not self.recovering:
                log.warning("broker unreachable (%s); will re-send what it lost once it is back", exc)
            self.recovering = True
            return 0
        if self.identity is not None and view.identity != self.identity:
            log.warning("broker restarted; re-sending what it lost")
            self.recovering = True
        self.identity = view.identity
        if self.database_away:
            self.spare_leases_until = time.monotonic() + self.settings.job_lease_s / 2
        try:
            sent = reap_once(
                self.settings, view, self.recovering, expire=time.monotonic() >= self.spare_leases_until
            )
        except Exception as exc:
            self.database_away = is_outage(exc)
            raise
        self.database_away = self.recovering = False
        return sent


def purge_expired(settings: Settings) -> int:
    """Vendor tokens past their lifetime (Face++ face_tokens: 72 h outside a FaceSet; Azure faceIds: 24 h
    unless persisted) are erased."""
    with session_scope() as session:
        deleted = purge_expired_tokens(session, settings)
    if deleted:
        log.info("erased %d faces of expired vendor tokens", deleted)
    return deleted


def start_reaper_thread() -> threading.Thread:
    settings = get_settings()
    reaper = Reaper(settings)
    stop = threading.Event()

    def loop() -> None:
        last_purge = 0.0
        while True:
            try:
                reaper.sweep()
                if time.monotonic() - last_purge >= PURGE_INTERVAL_S:  # a scan of old images: not often
                    last_purge = time.monotonic()
                    purge_expired(settings)
            except Exception as exc:  # the database may be briefly away; try again next interval
                if is_outage(exc):
                    log.warning("reaper: database unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("reaper sweep failed")
            if stop.wait(settings.reaper_interval_s):
                return

    thread = threading.Thread(target=loop, name="facequeue-reaper", daemon=True)
    thread.start()
    return thread
