"""Each worker says it is alive every HEARTBEAT_S seconds; /health counts the workers seen recently.

A row in the database rather than a Celery ping: broadcast control messages do not exist on the embedded
SQLite broker, and the database is what the api already reads.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import delete, func, select

from schema.db import session_scope
from schema.tables import WorkerHeartbeat, utcnow

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
ALIVE_WITHIN_S = 3 * HEARTBEAT_S


def beat(name: str, queues: str) -> None:
    with session_scope() as session:
        row = session.get(WorkerHeartbeat, name)
        if row is None:
            session.add(WorkerHeartbeat(name=name, queues=queues, last_seen=utcnow()))
        else:
            row.last_seen, row.queues = utcnow(), queues


def forget(name: str) -> None:
    with session_scope() as session:
        session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name == name))


def alive_workers() -> int:
    cutoff = utcnow() - timedelta(seconds=ALIVE_WITHIN_S)
    with session_scope() as session:
        return session.execute(
            select(func.count()).select_from(WorkerHeartbeat).where(WorkerHeartbeat.last_seen >= cutoff)
        ).scalar_one()


def start_heartbeat_thread(name: str, queues: str) -> threading.Event:
    """Beat until the returned event is set (at worker shutdown)."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                beat(name, queues)
            except Exception:  # the database may be briefly away; the next beat says we are alive
                log.warning("heartbeat failed", exc_info=True)
            if stop.wait(HEARTBEAT_S):
                return

    threading.Thread(target=loop, name="facequeue-heartbeat", daemon=True).start()
    return stop
