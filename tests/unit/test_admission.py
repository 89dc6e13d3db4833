"""Admission limits, micro-batch claims and queue order, on SQLite and in-process counters (no servers)."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from PIL import Image as PILImage
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from api.limits import QueueLimiter, RateLimiter
from facequeue.settings import Settings
from schema.errors import ErrorCode, FacequeueError
from schema.tables import Base, Image, Tenant, utcnow
from workers import jobs


@pytest.fixture
def session(tmp_path) -> Session:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'admission.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as db:
        db.add(Tenant(id=1, name="t"))
        db.commit()
        yield db


def add_jobs(session: Session, n: int, queue: str = "images", age_s: float = 0) -> list[str]:
    images = [
        Image(tenant_id=1, queue=queue, updated_at=utcnow() - timedelta(seconds=age_s + i)) for i in range(n)
    ]
    session.add_all(images)
    session.commit()
    return [image.uid for image in images]


def test_rate_limiter_counts_per_tenant_and_second() -> None:
    limiter = RateLimiter(None)  # embedded default: in-process counter
    while time.time() % 1 > 0.5:  # start early in a window so all hits fall in one second
        time.sleep(0.05)
    for _ in range(3):
        limiter.hit(1, limit=3)
    with pytest.raises(FacequeueError) as refused:
        limiter.hit(1, limit=3)
    assert refused.value.code is ErrorCode.RATE_LIMITED and refused.value.retry_after == 1
    limiter.hit(2, limit=3)  # another tenant has its own budget
    limiter.hit(1, limit=0)  # 0 = no limit


def test_queue_limiter_counts_queued_jobs_of_one_queue(session: Session) -> None:
    settings = Settings(tenant_max_queued=3, queue_full_retry_after_s=9)
    add_jobs(session, 2)
    add_jobs(session, 5, queue="images_bulk")
    limiter = QueueLimiter()
    limiter.admit(session, 1, "images", settings)  # 2 queued: admitted, now counted as 3
    with pytest.raises(FacequeueError) as refused:
        limiter.admit(session, 1, "images", settings)
    assert refused.value.code is ErrorCode.TOO_MANY_QUEUED and refused.value.retry_after == 9
    with pytest.raises(FacequeueError):  # the bulk backlog is over the limit too ...
        limiter.admit(session, 1, "images_bulk", settings)
    limiter.admit(session, 2, "images", settings)  # ... but another tenant is not


def test_a_group_of_jobs_is_admitted_whole_while_under_the_limit(session: Session) -> None:
    settings = Settings(tenant_max_queued=6)
    add_jobs(session, 2)
    limiter = QueueLimiter()
    limiter.admit(session, 1, "images", settings, count=5)  # 2 queued, under 6: all five, now counted as 7
    with pytest.raises(FacequeueError):  # counted one by one, the next would still be under the limit
        limiter.admit(session, 1, "images", settings)


def test_claim_queued_takes_the_oldest_of_one_queue(session: Session) -> None:
    interactive = add_jobs(session, 3)
    bulk = add_jobs(session, 5, queue="images_bulk", age_s=100)
    claimed = jobs.claim_queued(session, "images_bulk", limit=2, lease_s=60)
    session.commit()
    # add_jobs makes later jobs older: the two oldest are the last two
    assert sorted(image.uid for image in claimed) == sorted(bulk[-2:])
    assert all(image.status == "processing" and image.attempts == 1 for image in claimed)
    again = jobs.claim_queued(session, "images_bulk", limit=10, lease_s=60)
    assert sorted(image.uid for image in again) == sorted(bulk[:3]), "a claimed job is never claimed twice"
    assert {i.uid for i in jobs.claim_queued(session, "images", 10, 60)} == set(interactive)
    assert jobs.claim_queued(session, "images", 10, 60) == []


def test_workers_consume_interactive_first_and_bulk_last(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from facequeue.cli import worker_command
    from workers import celery_app

    command = worker_command([])
    queues = command[command.index("-Q") + 1].split(",")
    assert queues[0] == "images" and queues[-1] == "images_bulk"
    monkeypatch.setattr(celery_app, "get_settings", lambda: Settings(broker_url="redis://127.0.0.1:6379/0"))
    app = celery_app.make_celery()
    # Redis BRPOPs the queues in the order given (not round robin), one message at a time.
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_task_events_only_when_asked(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Off by default (Flower switches them on while it runs); FACEQUEUE_TASK_EVENTS=true sends them always."""
    from workers import celery_app

    assert celery_app.make_celery().conf.worker_send_task_events is False
    monkeypatch.setenv("FACEQUEUE_TASK_EVENTS", "true")
    monkeypatch.setattr(celery_app, "get_settings", lambda: Settings())
    assert celery_app.make_celery().conf.worker_send_task_events is True


def test_renew_extends_only_the_leases_this_attempt_owns(session: Session) -> None:
    mine, taken_over = add_jobs(session, 2)
    owned = [(image.uid, image.attempts) for image in jobs.claim_queued(session, "images", 2, lease_s=1)]
    session.commit()
    assert {uid for uid, _ in owned} == {mine, taken_over}
    session.get(Image, taken_over).attempts += 1  # another worker took this one over
    session.commit()
    before = session.get(Image, mine).lease_until
    assert jobs.renew_many(session, Image, owned, lease_s=600) == 1
    session.commit()
    renewed = session.get(Image, mine, populate_existing=True).lease_until
    assert renewed.replace(tzinfo=None) > before.replace(tzinfo=None) + timedelta(seconds=500)


def test_known_batch_skips_its_statements_only_once_committed(session: Session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from api import uploads
    from schema.tables import Batch

    monkeypatch.setattr(uploads, "known_batches", uploads.KnownBatches())
    monkeypatch.setattr(uploads, "_send", lambda uid, queue: None)  # no broker here
    ensured: list[str] = []
    real_ensure = uploads.ensure_batch
    monkeypatch.setattr(
        uploads, "ensure_batch", lambda s, t, name: ensured.append(name) or real_ensure(s, t, name)
    )
    settings, tenant = Settings(), session.get(Tenant, 1)

    def upload(i: int, batch: str) -> Image:
        buffer = io.BytesIO()
        PILImage.new("RGB", (16 + i, 16)).save(buffer, "JPEG")  # distinct bytes: no dedupe
        return uploads.create_image_job(session, settings, tenant, data=buffer.getvalue(), batch=batch)

    # A transaction that fails after ensure_batch leaves nothing behind, so nothing is remembered ...
    monkeypatch.setattr(session, "commit", lambda: (_ for _ in ()).throw(RuntimeError("database gone")))
    with pytest.raises(RuntimeError):
        upload(0, "b")
    session.rollback()
    monkeypatch.delattr(session, "commit")
    # ... and the next upload creates the row; later uploads into the batch skip both statements.
    for i in range(1, 4):
        upload(i, "b")
    upload(4, "other")
    assert ensured == ["b", "b", "other"]
    assert sorted(session.execute(select(Batch.name)).scalars()) == ["b", "other"]
