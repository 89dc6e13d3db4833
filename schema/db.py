"""Engine and sessions. Postgres in production; SQLite (WAL, busy timeout) for the embedded default."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from facequeue.settings import get_settings


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().resolved_database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # pre-ping: a pooled connection that a database restart cut is replaced before it is handed out.
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=10)


@lru_cache
def _session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any exception."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


log = logging.getLogger(__name__)
T = TypeVar("T")


def is_outage(error: BaseException) -> bool:
    """The database is away or restarting (connection refused or cut, pool exhausted), not a bad query."""
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or isinstance(error, exc.OperationalError | exc.InterfaceError)
    return isinstance(error, exc.TimeoutError | exc.DisconnectionError)


def retry_outage(action: Callable[[], T], within_s: float) -> T:
    """Run `action` (a whole transaction), again with backoff while the database is away, for `within_s`."""
    deadline, delay = time.monotonic() + within_s, 0.1
    while True:
        try:
            return action()
        except Exception as error:
            remaining = deadline - time.monotonic()
            if not is_outage(error) or remaining <= 0:
                raise
            pause = min(delay, remaining)  # the whole budget is used: the last try comes at the deadline
            log.warning("database unavailable (%s); retrying in %.1fs", type(error).__name__, pause)
            time.sleep(pause)
            delay = min(2.0, delay * 2)


def connect(session: Session, within_s: float) -> None:
    """Open the session's connection now, waiting up to `within_s` for a restarting database.

    Safe to retry because nothing has been done yet; a request that then loses the database halfway
    answers 503 instead (see api/app.py).
    """

    def attempt() -> None:
        try:
            session.connection()
        except Exception:
            session.rollback()
            raise

    retry_outage(attempt, within_s)
