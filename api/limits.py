"""Admission control per tenant: requests per second and queued jobs, answered with 429 + Retry-After.

Requests/s is a fixed one-second window. On a Redis broker the counter lives in Redis (one INCR + EXPIRE
round trip), so every api process and host shares it; on the embedded default each api process counts
for itself. The queue limit reads a cheap indexed count of the tenant's queued jobs, cached for a second
per process and bumped locally by each admission, so a burst cannot slip far past it.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facequeue.settings import Settings, get_settings
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.tables import Image

log = logging.getLogger(__name__)
COUNT_TTL_S = 1.0


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.redis = None
        if redis_url and redis_url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._local: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, tenant_id: int, limit: int) -> None:
        """Count one request; raise RATE_LIMITED when the tenant is over `limit` in this second."""
        if limit <= 0:
            return
        now = time.time()
        window = int(now)
        count = self._count(tenant_id, window)
        if count > limit:
            retry_after = max(1, int(window + 1 - now + 0.999))
            raise FacequeueError(
                ErrorCode.RATE_LIMITED, f"more than {limit} requests per second", retry_after=retry_after
            )

    def _count(self, tenant_id: int, window: int) -> int:
        if self.redis is not None:
            key = f"facequeue:rate:{tenant_id}:{window}"
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    count, _ = pipe.incr(key).expire(key, 2).execute()
                return int(count)
            except Exception:  # Redis briefly away: admit rather than fail every request
                log.warning("rate counter unavailable; admitting", exc_info=True)
                return 0
        with self._lock:
            if len(self._local) > 10_000:  # old windows
                self._local = {k: v for k, v in self._local.items() if k[1] >= window}
            count = self._local.get((tenant_id, window), 0) + 1
            self._local[(tenant_id, window)] = count
            return count


class QueueLimiter:
    def __init__(self) -> None:
        self._counts: dict[tuple[int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def admit(self, session: Session, tenant_id: int, queue: str, settings: Settings, count: int = 1) -> None:
        """Raise TOO_MANY_QUEUED when the tenant already has the limit of queued jobs in this queue; else
        count `count` more (a multi-file request is admitted whole while the tenant is under its limit)."""
        limit = settings.tenant_max_queued
        if limit <= 0:
            return
        key, now = (tenant_id, queue), time.monotonic()
        with self._lock:
            cached = self._counts.get(key)
        if cached is None or now - cached[0] > COUNT_TTL_S:
            queued = session.execute(
                select(func.count())
                .select_from(Image)
                .where(Image.tenant_id == tenant_id, Image.status == JobStatus.QUEUED, Image.queue == queue)
            ).scalar_one()
            cached = (now, queued)
        if cached[1] >= limit:
            with self._lock:
                self._counts[key] = cached
            raise FacequeueError(
                ErrorCode.TOO_MANY_QUEUED,
                f"{cached[1]} jobs queued in {queue} (limit {limit})",
                retry_after=settings.queue_full_retry_after_s,
            )
        with self._lock:
            self._counts[key] = (cached[0], cached[1] + count)


@lru_cache
def rate_limiter() -> RateLimiter:
    return RateLimiter(get_settings().resolved_broker_url)


@lru_cache
def queue_limiter() -> QueueLimiter:
    return QueueLimiter()
