"""Service throughput: micro-batching off vs on, and interactive time-to-done while a bulk backlog drains.

Production shape on this host: `facequeue api` (uvicorn) and `facequeue worker --concurrency P` against a
fresh Postgres database and a Redis db. For each mode (FACEQUEUE_BATCH_MAX_JOBS=1, then =N) a fresh
worker is warmed up on a few interactive uploads, then N photos are queued as bulk work (what a batch
upload or a URL manifest creates: `create_image_job(..., batch=NAME)`), and while they drain one
interactive upload is sent every --interactive-every seconds through the api and polled until done.
Prints bulk images/s and faces/s per mode, their ratio, and the interactive time-to-done p50/p95.

    nice .venv/bin/python benchmarks/throughput.py --photos 200 --processes 2 --batch 4 --redis redis://127.0.0.1:6379/8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "misc"
FOLDERS = ("face_recognition_ageitgey/examples", "CompreFace_sample_images", "face-api.js/examples_images")


def photos(n: int) -> list[bytes]:
    """n distinct JPEGs: the shared photos, cycled with unique trailing bytes (a JPEG ignores them)."""
    files = sorted(p for folder in FOLDERS for p in (DATA / folder).glob("*.jp*g"))
    if not files:
        raise SystemExit(f"no photos under {DATA}")
    raw = [p.read_bytes() for p in files]
    return [raw[i % len(raw)] + f"#{i}-{uuid.uuid4()}".encode() for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--processes", type=int, default=2, help="worker processes (celery --concurrency)")
    parser.add_argument("--batch", type=int, default=4, help="FACEQUEUE_BATCH_MAX_JOBS when micro-batching")
    parser.add_argument("--wait-ms", type=int, default=20, help="FACEQUEUE_BATCH_WAIT_MS when micro-batching")
    parser.add_argument("--flags", default="basic", help="detection_flags of every job")
    parser.add_argument(
        "--interactive-every", type=float, default=1.5, help="seconds between interactive uploads"
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    db_name = f"facequeue_tput_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{args.pg}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{db_name}"'))
    home = Path(tempfile.mkdtemp(prefix="facequeue-tput-"))
    os.environ.update(
        DATABASE_URL=f"{args.pg}/{db_name}",
        BROKER_URL=args.redis,
        FACEQUEUE_HOME=str(home),
        FACEQUEUE_WORKER_METRICS_PORT="0",
        FACEQUEUE_TENANT_MAX_QUEUED="0",
    )
    facequeue = [sys.executable, "-m", "facequeue.cli"]
    api = worker = None
    try:
        subprocess.run([*facequeue, "migrate"], check=True, capture_output=True)
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        api = subprocess.Popen(
            [*facequeue, "api", "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        from api.deps import key_sha256
        from api.uploads import create_image_job
        from facequeue.settings import get_settings
        from schema.db import session_scope
        from schema.tables import ApiKey, Tenant

        def key_for(name: str) -> tuple[str, int]:
            out = subprocess.run(
                [*facequeue, "keys", "create", name], check=True, capture_output=True, text=True
            )
            key = out.stdout.strip().splitlines()[-1]
            with session_scope() as session:
                tenant = session.query(Tenant).join(ApiKey).filter(ApiKey.key_sha256 == key_sha256(key)).one()
                return key, tenant.id

        def wait_done(http: httpx.Client, uid: str, timeout: float = 600) -> float:
            start = time.monotonic()
            while time.monotonic() - start < timeout:
                if http.get(f"/v2/media/{uid}").json()["status"] in ("done", "error"):
                    return time.monotonic()
                time.sleep(0.05)
            raise TimeoutError(uid)

        def db_one(sql: str, **params: object):  # type: ignore[no-untyped-def]
            from schema.db import get_engine

            with get_engine().connect() as connection:
                return connection.execute(text(sql), params).one()

        print(
            f"{args.photos} photos, {args.processes} worker processes, flags {args.flags!r}, "
            f"micro-batch {args.batch} jobs / {args.wait_ms} ms; load average at start "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        results = {}
        for mode, batch in (("off", 1), ("on", args.batch)):
            key, tenant_id = key_for(f"tput-{mode}")
            env = {
                **os.environ,
                "FACEQUEUE_BATCH_MAX_JOBS": str(batch),
                "FACEQUEUE_BATCH_WAIT_MS": str(args.wait_ms),
            }
            from facequeue.cli import worker_command

            log = (home / f"worker-{mode}.log").open("w")
            worker = subprocess.Popen(
                worker_command(["--concurrency", str(args.processes), "-n", f"tput-{mode}@%h"]),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
                for _ in range(100):
                    try:
                        if http.get("/health/live").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
                warm = [
                    http.post(
                        "/v2/media/file", files={"file": ("w.jpg", p)}, data={"detection_flags": args.flags}
                    )
                    for p in photos(2 * args.processes)
                ]
                for answer in warm:
                    wait_done(http, answer.json()["media_uuid"])
                with session_scope() as session:
                    tenant = session.get(Tenant, tenant_id)
                    settings = get_settings()
                    start = time.monotonic()
                    bulk = [
                        create_image_job(
                            session,
                            settings,
                            tenant,
                            data=p,
                            detection_flags=args.flags,
                            batch=f"tput-{mode}",
                        ).uid
                        for p in photos(args.photos)
                    ]
                queued_s = time.monotonic() - start
                latencies: list[float] = []
                stop = threading.Event()

                def interactive(key: str, stop: threading.Event, latencies: list[float]) -> None:
                    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as own:
                        for photo in photos(1000):
                            if stop.wait(args.interactive_every):
                                return
                            sent = time.monotonic()
                            answer = own.post(
                                "/v2/media/file",
                                files={"file": ("i.jpg", photo)},
                                data={"detection_flags": args.flags},
                            )
                            latencies.append(wait_done(own, answer.json()["media_uuid"]) - sent)

                prober = threading.Thread(target=interactive, args=(key, stop, latencies))
                prober.start()
                for uid in bulk:
                    wait_done(http, uid)
                drained = time.monotonic() - start
                stop.set()
                prober.join()
            faces, errors = db_one(
                "SELECT count(f.uid), count(DISTINCT i.uid) FILTER (WHERE i.status = 'error') FROM images i "
                "LEFT JOIN faces f ON f.image_uid = i.uid WHERE i.uid = ANY(:u)",
                u=bulk,
            )
            results[mode] = (args.photos / drained, faces / drained)
            print(
                f"micro-batching {mode:<3} (batch {batch}): {args.photos} bulk images in {drained:6.1f} s "
                f"(queued in {queued_s:.1f} s): {args.photos / drained:6.2f} images/s, {faces / drained:6.2f} faces/s, "
                f"errors {errors}; interactive time-to-done over {len(latencies)} uploads: "
                f"p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
                f"max {max(latencies):.2f} s, mean {statistics.mean(latencies):.2f} s"
            )
            os.killpg(worker.pid, 15)
            worker.wait(timeout=60)
            worker = None
        print(
            f"micro-batching on / off: images/s x{results['on'][0] / results['off'][0]:.2f}, "
            f"faces/s x{results['on'][1] / results['off'][1]:.2f}"
        )
    finally:
        for process in (worker, api):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, 9)
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        from schema.db import get_engine

        get_engine().dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
