"""What a job costs the worker beyond the pipeline: CPU per job, three ways, on a fresh Postgres database.

1. Celery alone: messages for unknown jobs through `facequeue worker --concurrency 2` (each task claims
   nothing and returns): the worker tree's CPU per message.
2. Trivial jobs through the same worker: tiny faceless PNGs queued as bulk work, the worker tree's CPU
   per job (the pipeline itself costs under a millisecond on them).
3. The same trivial jobs in one process, no Celery: `run_job` (claim, read the bytes, decode, analyse,
   store, notify) against decode + analyse alone; thread CPU each, and SQL statements per job. (On real
   photos the difference drowns in the analysis' own variation; on these it is the bookkeeping.)

    python benchmarks/job_cost.py --messages 1000 --trivial 300
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from sqlalchemy import event, select, text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ingest import FACEQUEUE, cpu_by_role, fresh_database  # noqa: E402


def tiny_png(i: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((32, 32 + i % 200, 3), i % 256, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue() + f"job-cost-{i}".encode()  # distinct bytes: no dedupe


class FakeTask:
    """What run_job needs of a Celery task when called in process."""

    name = "job_cost"
    request = type("Request", (), {"retries": 0})()

    def retry(self, exc: Exception, countdown: float, **kwargs: object) -> Exception:
        raise exc


def wait_finished(count: int) -> None:
    from schema.db import session_scope

    while True:
        with session_scope() as session:
            finished = session.execute(
                text("SELECT count(*) FROM images WHERE status IN ('done', 'error')")
            ).scalar_one()
        if finished >= count:
            return
        time.sleep(0.2)


def through_worker(args: argparse.Namespace, env: dict[str, str], tenant_id: int) -> None:
    import redis

    from api.uploads import create_image_job
    from facequeue.settings import get_settings
    from schema.db import session_scope
    from schema.tables import Tenant
    from workers.celery_app import BULK_QUEUE, IMAGES_QUEUE, enqueue_image

    settings = get_settings()

    def queue(first: int, count: int) -> None:
        for i in range(first, first + count):
            with session_scope() as session:
                tenant = session.get(Tenant, tenant_id)
                create_image_job(session, settings, tenant, data=tiny_png(i), batch="job-cost")

    worker = subprocess.Popen(
        [*FACEQUEUE, "worker", "--concurrency", "2", "--loglevel", "WARNING"], env=env, cwd=ROOT
    )
    try:
        queue(0, 10)  # warm-up: both pool processes load their models
        wait_finished(10)
        broker = redis.Redis.from_url(args.redis)
        # Trivial jobs first: after a thousand messages for unknown jobs the same jobs measured 23 ms
        # instead of 15 (not pursued), so each phase gets the worker as fresh as possible.
        before = cpu_by_role({"worker": [worker.pid]})["worker"]
        queue(10, args.trivial)
        wait_finished(10 + args.trivial)
        middle = cpu_by_role({"worker": [worker.pid]})["worker"]
        for _ in range(args.messages):
            enqueue_image(str(uuid.uuid4()), BULK_QUEUE)
        while broker.llen(BULK_QUEUE) or broker.llen(IMAGES_QUEUE):
            time.sleep(0.05)
        time.sleep(1)  # the last messages' tasks end
        after = cpu_by_role({"worker": [worker.pid]})["worker"]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    print(f"1. Celery alone: {1000 * (after - middle) / args.messages:.1f} ms of worker CPU per message")
    print(f"2. trivial jobs: {1000 * (middle - before) / args.trivial:.1f} ms of worker CPU per job")


def in_process(args: argparse.Namespace, tenant_id: int) -> None:
    from sqlalchemy.engine import Engine

    from api.uploads import create_image_job
    from facequeue.settings import get_settings
    from schema.db import session_scope
    from schema.flags import parse_flags
    from schema.tables import Image, Tenant
    from workers import tasks
    from workers.pipeline.analyse import get_pipeline
    from workers.pipeline.decode import decode_image

    settings = get_settings()
    photos = [tiny_png(100_000 + i) for i in range(args.trivial + 1)]
    uids = []
    for data in photos:
        with session_scope() as session:
            tenant = session.get(Tenant, tenant_id)
            uids.append(create_image_job(session, settings, tenant, data=data).uid)
    pipeline = get_pipeline(settings)

    def pipeline_only(data: bytes) -> None:
        rgb = decode_image(data, settings.max_upload_bytes, settings.max_image_pixels).rgb
        pipeline.analyse(rgb, set(parse_flags("")), options={"landmark_set": "betaface"})

    pipeline_only(photos[0])  # warm-up
    tasks.run_job(FakeTask(), Image, uids[0], tasks.analyse_image, tasks.store_image)
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    event.listen(Engine, "before_cursor_execute", count)
    job_cpu = pipeline_cpu = 0.0
    for path, uid in zip(photos[1:], uids[1:], strict=True):
        start = time.thread_time()
        pipeline_only(path)
        pipeline_cpu += time.thread_time() - start
        start = time.thread_time()
        tasks.run_job(FakeTask(), Image, uid, tasks.analyse_image, tasks.store_image)
        job_cpu += time.thread_time() - start
    with session_scope() as session:
        statuses = set(session.execute(select(Image.status).where(Image.uid.in_(uids))).scalars())
    assert statuses == {"done"}, statuses
    n = len(photos) - 1
    print(
        f"3. in process, {n} trivial jobs: run_job {1000 * job_cpu / n:.1f} ms, decode + analyse "
        f"{1000 * pipeline_cpu / n:.1f} ms, difference {1000 * (job_cpu - pipeline_cpu) / n:.1f} ms per job; "
        f"{statements / n:.1f} SQL statements per job"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000, help="messages for unknown jobs (Celery alone)")
    parser.add_argument("--trivial", type=int, default=300, help="trivial jobs through the worker")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    with fresh_database(args.pg, "facequeue_job_cost") as database_url:
        home = Path(tempfile.mkdtemp(prefix="facequeue-job-cost-home-"))
        env = {**os.environ, "DATABASE_URL": database_url, "BROKER_URL": args.redis}
        env["FACEQUEUE_HOME"] = str(home)
        os.environ.update(env)
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        subprocess.run([*FACEQUEUE, "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
        subprocess.run(
            [*FACEQUEUE, "keys", "create", "job-cost"], env=env, check=True, capture_output=True, cwd=ROOT
        )
        from schema.db import get_engine, session_scope
        from schema.tables import Tenant

        with session_scope() as session:
            tenant_id = session.execute(select(Tenant.id).where(Tenant.name == "job-cost")).scalar_one()
        load = os.getloadavg()
        print(f"load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}", flush=True)
        try:
            through_worker(args, env, tenant_id)
            in_process(args, tenant_id)
        finally:
            get_engine().dispose()


if __name__ == "__main__":
    main()
