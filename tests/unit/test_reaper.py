"""The reaper notices a broker that came back (outage or restart) and then re-sends without waiting."""

from __future__ import annotations

import pytest
from sqlalchemy import exc

from facequeue.settings import Settings
from workers import reaper


@pytest.fixture
def sweeps(monkeypatch):  # type: ignore[no-untyped-def]
    state = {"view": reaper.BrokerView(identity="run-1"), "down": False}
    calls: list[bool] = []

    def view() -> reaper.BrokerView:
        if state["down"]:
            raise ConnectionError("broker unreachable")
        return state["view"]

    monkeypatch.setattr(reaper, "broker_view", view)

    def reap_once(settings, view, recovered, expire):  # type: ignore[no-untyped-def]
        if state.get("database_down"):
            raise exc.OperationalError("SELECT", {}, Exception("connection refused"))
        calls.append(recovered)
        expires.append(expire)
        return 0

    expires: list[bool] = []
    state["expires"] = expires
    monkeypatch.setattr(reaper, "reap_once", reap_once)
    return state, calls


def test_recovery_sweeps_after_start_outage_and_restart(sweeps) -> None:  # type: ignore[no-untyped-def]
    state, calls = sweeps
    sweeper = reaper.Reaper(Settings())
    sweeper.sweep()
    sweeper.sweep()
    assert calls == [True, False]  # a worker's first sweep re-sends what is missing at once
    state["down"] = True
    sweeper.sweep()  # nothing can be sent while the broker is away
    state["down"] = False
    sweeper.sweep()
    sweeper.sweep()
    assert calls[2:] == [True, False]
    state["view"] = reaper.BrokerView(identity="run-2")  # restarted between two sweeps
    sweeper.sweep()
    sweeper.sweep()
    assert calls[4:] == [True, False]


def test_lapsed_leases_are_spared_for_a_while_after_a_database_outage(sweeps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    state, _ = sweeps
    clock = [1000.0]
    monkeypatch.setattr(reaper.time, "monotonic", lambda: clock[0])
    sweeper = reaper.Reaper(Settings(job_lease_s=30))
    sweeper.sweep()
    state["database_down"] = True
    with pytest.raises(exc.OperationalError):
        sweeper.sweep()  # nobody can renew a lease now
    state["database_down"] = False
    sweeper.sweep()  # back: the owners of running jobs get half a lease to renew theirs
    clock[0] += 10
    sweeper.sweep()
    clock[0] += 6
    sweeper.sweep()
    assert state["expires"] == [True, False, False, True]


@pytest.fixture
def database(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    from contextlib import contextmanager

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from schema.tables import Base, Tenant

    engine = create_engine(f"sqlite:///{tmp_path / 'reaper.sqlite'}")
    Base.metadata.create_all(engine)

    @contextmanager
    def scope():  # type: ignore[no-untyped-def]
        with Session(engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    monkeypatch.setattr(reaper, "session_scope", scope)
    with scope() as session:
        session.add(Tenant(id=1, name="t"))
    return scope


def test_a_finished_job_whose_callback_message_never_left_is_found(database) -> None:  # type: ignore[no-untyped-def]
    """A worker killed between committing the job and sending the callback message (or a broker away at
    that moment) leaves a due callback with no message: the reaper sends it, once."""
    from schema.tables import Image
    from workers import callbacks

    uid = "00000000-0000-0000-0000-000000000003"
    with database() as session:
        image = Image(uid=uid, tenant_id=1, status="done", options={"callback_url": "http://x/cb"})
        callbacks.make_due(image)
        session.add(image)
    assert reaper.due_callbacks(depth=0) == [uid]
    assert reaper.due_callbacks(depth=1) == []  # its message is still queued: no duplicate


def test_queued_jobs_beyond_the_queue_depth_are_resent(database) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from schema.tables import Image, utcnow

    old = utcnow() - timedelta(seconds=120)
    with database() as session:
        for n in range(3):
            session.add(Image(uid=f"00000000-0000-0000-0000-00000000001{n}", tenant_id=1, updated_at=old))
    assert reaper.lost_messages(Image, depth=3, min_age_s=30) == []  # all three still have a message
    resent = reaper.lost_messages(Image, depth=1, min_age_s=30)
    assert len(resent) == 2  # two were lost: the oldest two are re-sent
    left = reaper.lost_messages(Image, depth=0, min_age_s=30)  # the re-sent ones are young again
    assert len(left) == 1 and left[0] not in resent
    assert len(reaper.lost_messages(Image, depth=0, min_age_s=0)) == 3  # a recovery sweep counts all
