"""Enqueue load benchmark: sustained uploads from concurrent clients against the production setup.

Starts `facequeue api` (uvicorn) on loopback against a fresh Postgres database and a Redis db, then runs
concurrent clients for a fixed time: each uploads a distinct real JPEG (v1 base64 and v2 multipart,
alternating) and polls it once. Prints throughput and p50/p99 latency; the peer in the same run is
`GET /health`, the cheapest request that touches both Postgres and Redis.

    .venv/bin/python benchmarks/load.py --clients 8 --seconds 20 --api-workers 2

`--profile FILE` runs the api under py-spy (all api processes, collapsed stacks written to FILE) and
prints the functions where the api processes spent their samples.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
Action = tuple[httpx.Request, Callable[[httpx.Response], bool]]
PHOTO = ROOT.parent / "shared" / "data" / "misc" / "face_recognition_ageitgey" / "examples" / "biden.jpg"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run_clients(base: str, key: str, clients: int, seconds: float, action, rate: float = 0):  # type: ignore[no-untyped-def]
    """Closed loop (rate 0: each client sends as fast as answered) or open loop at `rate` requests/s in all.

    `action(http, index, n)` returns a built request and a check of its response: the latency is the time
    from sending to the whole answer, the client's own encoding and decoding excluded."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
            n = 0
            next_send = time.monotonic() + index * (clients / rate if rate else 0) / clients
            while time.monotonic() < stop:
                if rate:
                    time.sleep(max(0.0, next_send - time.monotonic()))
                    next_send += clients / rate
                request, check = action(http, index, n)  # built (encoded) before the clock starts
                start = time.perf_counter()
                response = http.send(request)
                elapsed = time.perf_counter() - start
                ok = check(response)
                with lock:
                    latencies.append(elapsed)
                    errors += not ok
                n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def process_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its descendants (Linux /proc).

    Unlike latency it hardly depends on what else runs on the host, so it compares runs made at
    different load averages."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    family, grown = {root}, True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grown = True
    return sum(cpu.get(pid, 0.0) for pid in family)


def print_profile(path: Path, top: int = 25) -> None:
    """Samples per function (inclusive), from py-spy's collapsed stacks, request-handling threads only."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("_run_sync_endpoint" in f or "uvicorn/protocols" in f or "run_asgi" in f for f in frames):
            continue  # start-up and imports; on-CPU samples only (py-spy without --idle)
        total += int(count)
        for frame in set(frames):
            inclusive[frame.split(" (")[0] + " " + frame.split("/")[-1].rstrip(")")] += int(count)
    print(f"py-spy: {total} on-CPU samples serving requests; inclusive share of the top functions:")
    for frame, count in inclusive.most_common(top + 12)[12:]:  # the first are process and thread roots
        print(f"  {100 * count / total:5.1f} %  {frame}")


def report(name: str, latencies: list[float], errors: int, seconds: float, cpu_s: float) -> float:
    p99 = percentile(latencies, 0.99)
    print(
        f"{name:<26} {len(latencies) / seconds:8.1f} req/s   p50 {percentile(latencies, 0.5):6.2f} ms   "
        f"p99 {p99:6.2f} ms   mean {statistics.mean(latencies) * 1000:6.2f} ms   errors {errors}   "
        f"api CPU {1000 * cpu_s / max(1, len(latencies)):5.2f} ms/req"
    )
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument(
        "--rate", type=float, default=50, help="offered uploads/s for the sustained-load phase"
    )
    parser.add_argument("--blob-store", default="db", choices=["db", "dir"], help="where original bytes go")
    parser.add_argument(
        "--image", type=Path, default=PHOTO, help="the photo uploaded (made unique per upload)"
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--profile", type=Path, help="record the api with py-spy into this file (collapsed)")
    args = parser.parse_args()

    db_name = f"facequeue_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{args.pg}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{db_name}"'))
    home = tempfile.mkdtemp(prefix="facequeue-load-")
    env = {
        **os.environ,
        "DATABASE_URL": f"{args.pg}/{db_name}",
        "BROKER_URL": args.redis,
        "FACEQUEUE_HOME": home,
        "FACEQUEUE_BLOB_STORE": args.blob_store,
    }
    facequeue = [sys.executable, "-m", "facequeue.cli"]
    api = None
    try:
        subprocess.run([*facequeue, "migrate"], env=env, check=True, capture_output=True)
        key = (
            subprocess.run(
                [*facequeue, "keys", "create", "load"], env=env, check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        with socket.socket() as probe:  # a free port: other runs may be going on on this host
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        profiler = (
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--subprocesses",
                "--idle",
                "--rate",
                "250",
                "--format",
                "raw",
            ]
            + ["-o", str(args.profile), "--"]
            if args.profile
            else []
        )
        api = subprocess.Popen(
            [
                *profiler,
                *facequeue,
                "api",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.api_workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: the uvicorn worker processes are stopped with it
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        photo = args.image.read_bytes()
        uploaded: list[str] = []

        def upload(http: httpx.Client, index: int, n: int) -> Action:
            # Distinct bytes per upload (a JPEG ignores trailing bytes), so nothing is deduplicated.
            data = photo + f"{index}-{n}-{uuid.uuid4()}".encode()
            if n % 2:
                request = http.build_request(
                    "POST", "/v2/media/file", files={"file": ("p.jpg", data, "image/jpeg")}
                )
                uid_field = "media_uuid"
            else:
                request = http.build_request(
                    "POST",
                    "/v1/UploadNewImage_File",
                    json={"imagefile_data": base64.b64encode(data).decode()},
                )
                uid_field = "img_uid"
            request.read()  # the multipart body too: encoded now, not while the clock runs

            def check(response: httpx.Response) -> bool:
                if uid := response.json().get(uid_field):
                    uploaded.append(uid)
                return bool(uid)

            return request, check

        def poll(http: httpx.Client, index: int, n: int) -> Action:
            uid = uploaded[(index * 7919 + n) % len(uploaded)]
            return http.build_request("GET", f"/v2/media/{uid}"), lambda r: r.status_code == 200

        def health(http: httpx.Client, index: int, n: int) -> Action:
            # No worker runs here, so /health answers 503 for "workers: 0"; database and broker must be ok.
            def check(response: httpx.Response) -> bool:
                body = response.json()
                return body.get("database") == "ok" and body.get("broker") == "ok"

            return http.build_request("GET", "/health"), check

        print(
            f"{args.clients} clients, {args.seconds:.0f} s each phase, api workers {args.api_workers}, "
            f"image {len(photo)} bytes, blob store {args.blob_store}; load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        run_clients(base, key, 2, 2, health)  # warm-up

        def phase(name: str, action, rate: float = 0) -> float:  # type: ignore[no-untyped-def]
            cpu = process_cpu_s(api.pid)
            latencies, errors = run_clients(base, key, args.clients, args.seconds, action, rate)
            return report(name, latencies, errors, args.seconds, process_cpu_s(api.pid) - cpu)

        phase("enqueue, closed loop", upload)
        peer = phase(f"peer: /health at {args.rate:.0f}/s", health, args.rate)
        enqueue = phase(f"enqueue at {args.rate:.0f}/s", upload, args.rate)
        phase(f"poll at {args.rate:.0f}/s", poll, args.rate)
        print(
            f"enqueue p99 / health p99 = {enqueue / peer:.2f}; target enqueue p99 < 20 ms: "
            f"{'met' if enqueue < 20 else 'NOT met'}"
        )
    finally:
        if api is not None:
            if args.profile:
                api.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT and stops the api
            else:
                api.terminate()
            try:
                api.wait(timeout=60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(api.pid, signal.SIGKILL)
            if args.profile:
                print_profile(args.profile)
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
