"""Job claims and fencing on a real (SQLite) database: the rules that keep retries and crashes safe."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from schema.errors import ErrorCode
from schema.tables import Base, Image, Tenant, utcnow
from workers import jobs


@pytest.fixture
def session(tmp_path) -> Session:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    Base.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as db:
        db.add(Tenant(id=1, name="t"))
        db.add(Image(uid="00000000-0000-0000-0000-000000000001", tenant_id=1))
        db.commit()
        yield db


UID = "00000000-0000-0000-0000-000000000001"


def test_claim_once(session: Session) -> None:
    first = jobs.claim(session, Image, UID, lease_s=60)
    assert first is not None and first.status == "processing" and first.attempts == 1
    assert jobs.claim(session, Image, UID, lease_s=60) is None  # a live lease cannot be taken


def test_expired_lease_is_taken_over_and_the_old_attempt_is_fenced(session: Session) -> None:
    jobs.claim(session, Image, UID, lease_s=60)
    session.get(Image, UID).lease_until = utcnow() - timedelta(seconds=1)
    session.commit()
    second = jobs.claim(session, Image, UID, lease_s=60)
    assert second is not None and second.attempts == 2
    assert jobs.lock_if_current(session, Image, UID, attempt=1) is None  # the dead worker's result is dropped
    current = jobs.lock_if_current(session, Image, UID, attempt=2)
    assert current is not None
    jobs.finish(current, ErrorCode.IMAGE_CORRUPT, "bad")
    session.commit()
    assert session.get(Image, UID).status == "error"
    assert jobs.claim(session, Image, UID, lease_s=60) is None  # finished jobs are never claimed again


def test_release_puts_the_job_back(session: Session) -> None:
    jobs.claim(session, Image, UID, lease_s=60)
    jobs.release(session, Image, UID, attempt=1)
    assert session.get(Image, UID, populate_existing=True).status == "queued"
    assert jobs.claim(session, Image, UID, lease_s=60) is not None


def test_resume_carries_on_our_attempt_without_spending_one(session: Session) -> None:
    jobs.claim(session, Image, UID, lease_s=60)
    resumed = jobs.claim(session, Image, UID, lease_s=60, resume=1)
    assert resumed is not None and resumed.attempts == 1  # a database outage costs no attempt
    assert jobs.claim(session, Image, UID, lease_s=60, resume=7) is None  # not ours, and the lease is live


def test_resume_of_a_superseded_attempt_is_an_ordinary_claim(session: Session) -> None:
    jobs.claim(session, Image, UID, lease_s=60)
    session.get(Image, UID).lease_until = utcnow() - timedelta(seconds=1)
    session.commit()
    assert jobs.claim(session, Image, UID, lease_s=60).attempts == 2  # another worker took over
    assert jobs.claim(session, Image, UID, lease_s=60, resume=1) is None  # the old owner cannot resume


def test_renew_extends_only_our_lease(session: Session) -> None:
    jobs.claim(session, Image, UID, lease_s=1)
    before = session.get(Image, UID).lease_until
    assert jobs.renew(session, Image, UID, attempt=1, lease_s=60)
    assert session.get(Image, UID, populate_existing=True).lease_until > before
    assert not jobs.renew(session, Image, UID, attempt=2, lease_s=60)


def test_lease_renewal_keeps_a_long_job_leased(session: Session, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time
    from contextlib import contextmanager

    engine = session.get_bind()

    @contextmanager
    def scope():  # type: ignore[no-untyped-def]
        with Session(engine) as beat_session:
            yield beat_session
            beat_session.commit()

    monkeypatch.setattr(jobs, "session_scope", scope)
    jobs.claim(session, Image, UID, lease_s=1)
    session.commit()
    with jobs.renewing_lease(Image, UID, attempt=1, lease_s=1.5):
        time.sleep(3.5)  # over two leases: without renewal the job would look dead
        lease = session.get(Image, UID, populate_existing=True).lease_until
        session.commit()
        assert lease.replace(tzinfo=utcnow().tzinfo) > utcnow()
