"""Job-finished notifications for the api's bounded waits (`?wait=`, the synchronous vendor adapters).

With a Redis broker a worker publishes the job uid on one pub/sub channel once the job's outcome is
committed; api processes listen (api/wait.py). Without Redis (the embedded SQLite default) nothing is
published: the api watches the database instead. A lost notification only makes a waiter time out; the
job itself is durable either way.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import redis

from facequeue.settings import get_settings

log = logging.getLogger(__name__)


def redis_url() -> str | None:
    url = get_settings().resolved_broker_url
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def channel() -> str:
    """Pub/sub channels ignore Redis database numbers: name the database so deployments sharing a server
    (or test runs on different dbs) do not hear each other."""
    client = publisher()
    db = client.connection_pool.connection_kwargs.get("db", 0) if client else 0
    return f"facequeue:{db}:finished"


@lru_cache
def publisher() -> redis.Redis | None:
    url = redis_url()
    if url is None:
        return None
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def job_finished(uid: str) -> None:
    """Tell waiting api processes that job `uid` is done or failed (call after the commit)."""
    client = publisher()
    if client is None:
        return
    try:
        client.publish(channel(), uid)
    except redis.RedisError:  # a waiter then times out and answers "accepted"; the job is safe
        log.warning("could not publish completion of %s", uid, exc_info=True)
