"""run_job on a real (SQLite) database: deterministic failures end a job at once, transient ones retry."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from facequeue.settings import Settings
from schema.errors import ErrorCode
from schema.tables import Base, Image, Tenant
from workers import jobs, tasks

UID = "00000000-0000-0000-0000-000000000002"


class Retry(Exception):
    pass


class FakeTask:
    name = "facequeue.test"

    def __init__(self) -> None:
        self.retries = 0
        self.request = type("Request", (), {"retries": 0})()

    def retry(self, exc: Exception, countdown: float, **kwargs: object) -> Exception:
        self.retries += 1
        return Retry(str(exc))


@pytest.fixture
def database(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'run.sqlite'}")
    Base.metadata.create_all(engine)
    factory = sessionmaker(bind=engine, expire_on_commit=False)

    @contextmanager
    def scope():  # type: ignore[no-untyped-def]
        session = factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    with scope() as session:
        session.add(Tenant(id=1, name="t"))
        session.add(Image(uid=UID, tenant_id=1))
    monkeypatch.setattr(tasks, "session_scope", scope)
    monkeypatch.setattr(jobs, "session_scope", scope)  # the lease heartbeat
    monkeypatch.setattr(
        tasks, "get_settings", lambda: Settings(home=tmp_path, max_attempts=5, job_lease_s=60)
    )
    return scope


def finish_ok(session, job, outcome, error):  # type: ignore[no-untyped-def]
    jobs.finish(job, error.code if error else None, error.message if error else None)
    return []


def state(scope) -> tuple[str, int | None, int]:  # type: ignore[no-untyped-def]
    with scope() as session:
        image = session.get(Image, UID)
        return image.status, image.error_code, image.attempts


def test_a_bug_ends_the_job_at_once(database) -> None:  # type: ignore[no-untyped-def]
    task = FakeTask()

    def work(job, settings):  # type: ignore[no-untyped-def]
        return {}["faces_uuids"]  # KeyError: the same input fails the same way every time

    assert tasks.run_job(task, Image, UID, work, finish_ok) == "error"
    assert state(database) == ("error", ErrorCode.PROCESSING_FAILED.v1, 1) and task.retries == 0


def test_a_transient_fault_is_retried(database) -> None:  # type: ignore[no-untyped-def]
    task = FakeTask()

    def work(job, settings):  # type: ignore[no-untyped-def]
        raise ConnectionError("connection reset by peer")  # a network fault: may pass

    with pytest.raises(Retry):
        tasks.run_job(task, Image, UID, work, finish_ok)
    assert state(database) == ("queued", None, 1) and task.retries == 1  # back in the queue


def test_a_database_outage_is_retried_keeping_the_attempt(database) -> None:  # type: ignore[no-untyped-def]
    task = FakeTask()

    def work(job, settings):  # type: ignore[no-untyped-def]
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    with pytest.raises(Retry):
        tasks.run_job(task, Image, UID, work, finish_ok)
    assert state(database)[0] == "processing" and task.retries == 1  # resumed by the retry


def test_a_result_the_database_refuses_ends_the_job(database) -> None:  # type: ignore[no-untyped-def]
    task = FakeTask()
    calls = []

    def store(session, job, outcome, error):  # type: ignore[no-untyped-def]
        calls.append(error)
        if error is None:
            raise ValueError("Out of range float values are not JSON compliant")
        return finish_ok(session, job, outcome, error)

    assert tasks.run_job(task, Image, UID, lambda job, settings: {"x": float("nan")}, store) == "error"
    assert state(database) == ("error", ErrorCode.PROCESSING_FAILED.v1, 1)
    assert calls[0] is None and calls[1].code == ErrorCode.PROCESSING_FAILED and task.retries == 0
