"""Prometheus metrics of the api and the workers (prometheus-client), one definition for both.

The api (uvicorn workers) and the Celery worker (prefork children) are several processes each, so a
launcher calls `enable_multiprocess` before it forks: every process then writes its counters to files in
one folder and a scrape sums them (prometheus-client's multiprocess mode). Every metric has labels, so no
value exists before that switch. Without it (tests, one process) the default registry is used.

Queue depths and jobs by status are facts of the broker and the database, not of a process: the api
collects them at scrape time (`StateCollector`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)
__all__ = ["CONTENT_TYPE_LATEST", "CollectorRegistry"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# api
UPLOADS = Counter("facequeue_uploads", "Image jobs created, by queue", ["queue"])
REQUEST_SECONDS = Histogram(
    "facequeue_request_seconds", "Time to answer an api request, by route", ["method", "route"],
    buckets=REQUEST_BUCKETS,
)  # fmt: skip
API_ERRORS = Counter("facequeue_api_errors", "Error answers of the api, by error code", ["code"])

# workers
JOBS_FINISHED = Counter(
    "facequeue_jobs_finished", "Image jobs finished, by queue and status", ["queue", "status"]
)
JOB_ERRORS = Counter("facequeue_job_errors", "Image jobs finished with an error, by error code", ["code"])
JOB_LATENCY = Histogram(
    "facequeue_job_latency_seconds", "Enqueue to done (upload accepted to result stored), by queue", ["queue"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
FACES = Counter("facequeue_faces", "Faces found (rate() = faces/s), by queue", ["queue"])
STAGE_SECONDS = Histogram(
    "facequeue_stage_seconds", "Model inference time per pipeline stage, per micro-batch", ["stage"],
    buckets=STAGE_BUCKETS,
)  # fmt: skip
BATCH_JOBS = Histogram(
    "facequeue_batch_jobs", "Jobs run together in one micro-batch, by queue", ["queue"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)  # fmt: skip


def enable_multiprocess(role: str, directory: Path | None = None) -> Path:
    """Switch this process (and the children it forks or spawns) to shared metric files in a fresh folder."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix=f"facequeue-metrics-{role}-"))
        launcher = os.getpid()
        # Removed when this (launching) process exits; children forked from it inherit the hook, so
        # only the launcher's own exit removes the folder.
        atexit.register(lambda: os.getpid() == launcher and shutil.rmtree(directory, ignore_errors=True))
    else:
        directory = directory / f"{role}-{os.getpid()}"
        shutil.rmtree(directory, ignore_errors=True)  # stale files of a previous run would be summed
        directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    return directory


def process_registry() -> CollectorRegistry:
    """What this process reports: the shared files in multiprocess mode, else its own registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class StateCollector:
    """Collected at scrape time: broker queue depths and job counts by status (one GROUP BY per table)."""

    def __init__(self, queues: tuple[str, ...]) -> None:
        self.queues = queues

    def collect(self):  # type: ignore[no-untyped-def]
        from sqlalchemy import func, select

        from schema.db import session_scope
        from schema.tables import Image, RecognizeJob
        from workers.reaper import broker_depth

        depth = GaugeMetricFamily("facequeue_queue_depth", "Messages waiting in the broker", labels=["queue"])
        for queue in self.queues:
            try:
                depth.add_metric([queue], broker_depth(queue))
            except Exception:  # the broker is away: say nothing rather than a made-up zero
                log.warning("queue depth of %s unavailable", queue, exc_info=True)
        yield depth
        jobs = GaugeMetricFamily(
            "facequeue_jobs",
            "Jobs in the database by kind, queue and status",
            labels=["kind", "queue", "status"],
        )
        try:
            with session_scope() as session:
                for queue, status, count in session.execute(
                    select(Image.queue, Image.status, func.count()).group_by(Image.queue, Image.status)
                ):
                    jobs.add_metric(["image", queue, status], count)
                for status, count in session.execute(
                    select(RecognizeJob.status, func.count()).group_by(RecognizeJob.status)
                ):
                    jobs.add_metric(["recognize", "recognize", status], count)
        except Exception:
            log.warning("job counts unavailable", exc_info=True)
        yield jobs


def render(*registries: CollectorRegistry) -> bytes:
    return b"".join(generate_latest(registry) for registry in registries)
