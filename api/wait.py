"""Bounded waits on the durable queue: a request enqueues as usual, then waits for the job's completion
notification, up to a timeout; the job stays queued and pollable if the wait runs out.

One listener per api process serves every waiting request (waits are asyncio futures, not threads):
- Redis broker: a thread subscribed to the workers' pub/sub channel (workers/notify.py) wakes the waiters
  of each finished uid. If the subscription drops, every waiter re-checks its job once after reconnecting.
- Otherwise (the embedded SQLite default has no server that could push anything, and the worker is
  another process): a thread asks SQLite for `PRAGMA data_version` every `wait_check_interval_s`. That
  number changes only when another connection committed, and reading it costs no table access; only
  then does the thread run ONE query for the uids of all current waiters. So the database sees one
  query per commit burst, whatever the number of waiters, and nothing at all while nobody waits.
  On another database without Redis the same thread runs that one shared query per tick.

Each waiter also checks its own job once after registering, so a job that finished before the wait
began (or a duplicate upload of a finished one) answers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from asyncio import FIRST_COMPLETED
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import redis
import redis.client
from sqlalchemy import Connection, Engine, select, text, union_all
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from facequeue.settings import get_settings
from schema.db import get_engine, session_scope
from schema.errors import JobStatus
from schema.tables import Image, RecognizeJob
from workers import notify

log = logging.getLogger(__name__)
FINISHED = (JobStatus.DONE, JobStatus.ERROR)
LISTENER_NAME = "facequeue-wait-{pid}"  # visible in Redis CLIENT LIST


class Waiters:
    """uid → the futures of the requests waiting for it; woken from the listener thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, set[asyncio.Future]] = defaultdict(set)
        self.changed = threading.Event()  # set when a waiter arrives (wakes an idle database watcher)

    def add(self, uid: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            self._by_uid[uid].add(future)
        self.changed.set()
        return future

    def remove(self, uid: str, future: asyncio.Future) -> None:
        with self._lock:
            futures = self._by_uid.get(uid)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._by_uid[uid]

    def uids(self) -> list[str]:
        with self._lock:
            return list(self._by_uid)

    def wake(self, uid: str, finished: bool = True) -> None:
        with self._lock:
            futures = list(self._by_uid.get(uid, ()))
        for future in futures:
            future.get_loop().call_soon_threadsafe(_resolve, future, finished)

    def wake_all(self) -> None:
        """A notification may have been missed: every waiter re-checks its job."""
        for uid in self.uids():
            self.wake(uid, finished=False)


def _resolve(future: asyncio.Future, finished: bool) -> None:
    if not future.done():
        future.set_result(finished)


def finished_uids(connection: Connection, uids: list[str]) -> set[str]:
    """The finished ones among `uids`: one query for all waiters together."""
    if not uids:
        return set()
    query = union_all(
        *(select(m.uid).where(m.uid.in_(uids), m.status.in_(FINISHED)) for m in (Image, RecognizeJob))
    )
    return set(connection.execute(query).scalars())


class _PubSub(redis.client.PubSub):
    """redis-py reconnects and resubscribes by itself after a lost connection; messages published
    meanwhile are gone, so every waiter re-checks its job then."""

    def __init__(self, client: redis.Redis, on_reconnect: Callable[[], None]) -> None:
        super().__init__(client.connection_pool, ignore_subscribe_messages=True)
        self._on_reconnect = on_reconnect

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        self._on_reconnect()


class RedisListener(threading.Thread):
    def __init__(self, waiters: Waiters) -> None:
        super().__init__(name="facequeue-wait-redis", daemon=True)
        self.waiters = waiters
        self.ready = threading.Event()

    def run(self) -> None:
        backoff = 0.5
        while True:
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    notify.redis_url(),
                    socket_connect_timeout=2,
                    health_check_interval=30,
                    client_name=LISTENER_NAME.format(pid=os.getpid()),
                )
                pubsub = _PubSub(client, self.waiters.wake_all)
                pubsub.subscribe(notify.channel())
                if self.ready.is_set():  # a new client after a failure: the same
                    self.waiters.wake_all()
                self.ready.set()
                backoff = 0.5
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self.waiters.wake(message["data"].decode())
            except Exception:
                log.warning("wait listener lost Redis; reconnecting", exc_info=True)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                time.sleep(backoff)
                backoff = min(10.0, backoff * 2)


class DatabaseWatcher(threading.Thread):
    def __init__(self, waiters: Waiters, interval: float, engine: Engine | None = None) -> None:
        super().__init__(name="facequeue-wait-db", daemon=True)
        self.waiters, self.interval, self.engine = waiters, interval, engine
        self.ready = threading.Event()
        self.ready.set()
        self.queries = 0  # shared queries run (tests show it does not grow with the number of waiters)

    def run(self) -> None:
        engine = self.engine or get_engine()
        sqlite = engine.dialect.name == "sqlite"
        version = None
        while True:
            try:
                with engine.connect() as connection:  # held: data_version is per connection
                    while True:
                        if not self.waiters.uids():
                            self.waiters.changed.wait()  # idle: no query at all
                        self.waiters.changed.clear()
                        current = connection.execute(text("PRAGMA data_version")).scalar() if sqlite else None
                        if not sqlite or current != version:
                            version = current
                            self.queries += 1
                            for uid in finished_uids(connection, self.waiters.uids()):
                                self.waiters.wake(uid)
                        connection.rollback()  # never an open transaction between ticks (Postgres)
                        time.sleep(self.interval)
            except Exception:
                log.warning("wait watcher failed; restarting", exc_info=True)
                self.waiters.wake_all()
                time.sleep(1.0)


_lock = threading.Lock()
_hub: tuple[Waiters, threading.Thread] | None = None


def hub() -> tuple[Waiters, threading.Thread]:
    """This process's waiters and their listener, started on first use."""
    global _hub
    with _lock:
        if _hub is None:
            waiters = Waiters()
            listener: threading.Thread
            if notify.redis_url():
                listener = RedisListener(waiters)
            else:
                listener = DatabaseWatcher(waiters, get_settings().wait_check_interval_s)
            listener.start()
            _hub = (waiters, listener)
    waiters, listener = _hub
    listener.ready.wait(timeout=2)  # subscribed before anyone relies on a notification
    return waiters, listener


def _finished_among(model: type[Image] | type[RecognizeJob], uids: list[str]) -> set[str]:
    with session_scope() as session:
        query = select(model.uid).where(model.uid.in_(uids), model.status.in_(FINISHED))
        return set(session.execute(query).scalars())


async def wait_finished(model: type[Image] | type[RecognizeJob], uid: str, seconds: float | None) -> bool:
    """True once job `uid` is done or failed; False if `seconds` (capped by FACEQUEUE_SYNC_WAIT_S) pass."""
    return uid in await wait_all_finished(model, [uid], seconds)


async def wait_all_finished(
    model: type[Image] | type[RecognizeJob], uids: list[str], seconds: float | None
) -> set[str]:
    """The finished ones among `uids`, once all are or `seconds` (capped by FACEQUEUE_SYNC_WAIT_S) pass.

    Each job is checked once after its waiter is registered (so one that finished before the wait began
    answers at once), all of them in one query; a waiter woken by a listener hiccup is checked again."""
    seconds = min(seconds or 0.0, get_settings().sync_wait_s)
    if seconds <= 0 or not uids:
        return set()
    waiters, _ = await run_in_threadpool(hub)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    finished: set[str] = set()
    futures: dict[str, asyncio.Future] = {}  # the jobs not known to be finished
    try:
        recheck = set(uids)
        while recheck:
            for uid in recheck:
                futures[uid] = waiters.add(uid)
            for uid in await run_in_threadpool(_finished_among, model, sorted(recheck)):
                waiters.remove(uid, futures.pop(uid))
                finished.add(uid)
            recheck = set()
            while futures and not recheck:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return finished
                done, _ = await asyncio.wait(
                    list(futures.values()), timeout=remaining, return_when=FIRST_COMPLETED
                )
                for uid, future in list(futures.items()):
                    if future in done:
                        waiters.remove(uid, futures.pop(uid))
                        # False: woken to re-check after a listener hiccup
                        (finished if future.result() else recheck).add(uid)
        return finished
    finally:
        for uid, future in futures.items():
            waiters.remove(uid, future)


async def create_and_wait(
    session: Session, create: Callable[[], Image], seconds: float | None = None
) -> tuple[Image, bool]:
    """Create an image job (in a worker thread: it touches the database), then wait for it: the
    synchronous vendors' one path. Returns the job (refreshed when finished) and whether it finished."""
    image = await run_in_threadpool(create)
    finished = await wait_finished(
        Image, image.uid, get_settings().sync_wait_s if seconds is None else seconds
    )
    if finished:
        await run_in_threadpool(session.refresh, image)
    return image, finished
