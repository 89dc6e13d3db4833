"""The callback outbox on a real (SQLite) database: due, claimed once, backed off, fenced, final state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.tables import Base, Image, Tenant, utcnow
from workers import callbacks

UID = "00000000-0000-0000-0000-000000000002"
SETTINGS = Settings(callback_max_attempts=3)


@pytest.fixture
def session(tmp_path) -> Session:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'callbacks.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as db:
        db.add(Tenant(id=1, name="t"))
        db.add(Image(uid=UID, tenant_id=1, status="processing", options={"callback_url": "http://x/cb"}))
        db.commit()
        yield db


def finish(session: Session) -> Image:
    image = session.get(Image, UID)
    image.status = "done"
    callbacks.make_due(image)
    session.commit()
    return image


def make_due_now(session: Session) -> None:
    session.get(Image, UID).callback_next_at = utcnow() - timedelta(seconds=1)
    session.commit()


def test_nothing_is_due_before_the_job_finishes(session: Session) -> None:
    session.get(Image, UID).callback_status = "pending"
    session.commit()
    assert callbacks.claim(session, UID, SETTINGS) is None
    assert callbacks.count_due(session) == 0


def test_a_due_callback_is_claimed_once(session: Session) -> None:
    finish(session)
    assert callbacks.count_due(session) == 1 and callbacks.oldest_due(session, 10) == [UID]
    image = callbacks.claim(session, UID, SETTINGS)
    assert image is not None and image.callback_attempts == 1
    assert callbacks.claim(session, UID, SETTINGS) is None  # a duplicate message finds it leased
    assert callbacks.count_due(session) == 0
    assert callbacks.record(session, UID, 1, None, SETTINGS) == "sent"
    session.commit()
    make_due_now(session)
    assert callbacks.claim(session, UID, SETTINGS) is None  # sent is final


def test_failures_back_off_then_end_failed(session: Session) -> None:
    finish(session)
    for attempt in (1, 2):
        assert callbacks.claim(session, UID, SETTINGS).callback_attempts == attempt
        assert callbacks.record(session, UID, attempt, "HTTP 500", SETTINGS) == "pending"
        session.commit()
        wait = session.get(Image, UID).callback_next_at
        assert wait.replace(tzinfo=utcnow().tzinfo) > utcnow() + timedelta(
            seconds=callbacks.backoff_s(attempt) - 2
        )
        assert callbacks.claim(session, UID, SETTINGS) is None  # backing off
        make_due_now(session)
    callbacks.claim(session, UID, SETTINGS)
    assert callbacks.record(session, UID, 3, "HTTP 500", SETTINGS) == "failed"
    session.commit()
    assert session.get(Image, UID).callback_error == "HTTP 500"


def test_a_lapsed_delivery_is_retried_and_the_late_answer_is_fenced_out(session: Session) -> None:
    finish(session)
    callbacks.claim(session, UID, SETTINGS)  # attempt 1: its worker dies mid-POST
    make_due_now(session)  # the delivery lease lapses
    assert callbacks.claim(session, UID, SETTINGS).callback_attempts == 2
    assert callbacks.record(session, UID, 1, "late", SETTINGS) == "superseded"
    assert callbacks.record(session, UID, 2, None, SETTINGS) == "sent"


def test_idempotency_key_is_stable_across_attempts(session: Session) -> None:
    image = finish(session)
    key = callbacks.idempotency_key(image)
    callbacks.claim(session, UID, SETTINGS)
    assert callbacks.idempotency_key(session.get(Image, UID)) == key == f"{UID}:done"
    assert [callbacks.backoff_s(n) for n in range(1, 6)] == [10, 20, 40, 80, 160]
