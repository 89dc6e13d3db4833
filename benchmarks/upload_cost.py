"""api CPU per request, one request at a time: what each kind of upload costs the api process itself.

Starts `facequeue api --workers 1` on a fresh Postgres database (no worker: jobs stay queued), sends N
requests of each kind one after another from this process and reads the api's CPU time from /proc:

- health: `GET /health` (a database query and a Redis ping: the floor of a request that touches both)
- v2: a 354 kB JPEG as multipart to `/v2/media/file`
- v2batch: the same into a batch, as `facequeue ingest` sends it
- v2files: 8 such files in one multipart request to `/v2/media/files`, into a batch, as `facequeue ingest`
  sends them (its figures are per image: the request's cost / 8)
- v1: the same as base64 in JSON to `/v1/UploadNewImage_File` (Betaface)

    python benchmarks/upload_cost.py --requests 600

Sequential requests make the figure independent of concurrency; `benchmarks/load.py` measures latency
under concurrent load.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ingest import FACEQUEUE, fresh_database  # noqa: E402
from benchmarks.load import PHOTO, process_cpu_s  # noqa: E402

KINDS = ("health", "v2", "v2batch", "v2files", "v1")
GROUP = 8  # files per v2files request, facequeue ingest's default --per-request


def send(http: httpx.Client, kind: str, photo: bytes, key: str) -> None:
    if kind == "health":
        response = http.get("/health")  # 503 without a worker; database and broker must answer
        assert response.json()["database"] == "ok", response.text
        return
    data = photo + uuid.uuid4().bytes  # distinct bytes: nothing is deduplicated (a JPEG ignores the tail)
    if kind == "v1":
        body = {"api_key": key, "imagefile_data": base64.b64encode(data).decode()}
        response = http.post("/v1/UploadNewImage_File", json=body)
        assert response.json()["int_response"] == 0, response.text
        return
    if kind == "v2files":
        files = [("file", (f"p{i}.jpg", photo + uuid.uuid4().bytes, "image/jpeg")) for i in range(GROUP)]
        response = http.post("/v2/media/files", files=files, data={"batch": "upload-cost"})
        assert response.status_code == 202 and len(response.json()["accepted"]) == GROUP, response.text
        return
    form = {"batch": "upload-cost"} if kind == "v2batch" else {}
    response = http.post("/v2/media/file", files={"file": ("p.jpg", data, "image/jpeg")}, data=form)
    assert response.status_code == 202, response.text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    photo = PHOTO.read_bytes()
    print(f"load average at start {', '.join(f'{x:.1f}' for x in os.getloadavg())}; image {len(photo)} bytes")
    with fresh_database(args.pg, "facequeue_upload_cost") as database_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "BROKER_URL": args.redis,
            "FACEQUEUE_HOME": tempfile.mkdtemp(prefix="facequeue-upload-cost-"),
        }
        subprocess.run([*FACEQUEUE, "migrate"], env=env, check=True, capture_output=True, cwd=ROOT)
        created = subprocess.run(
            [*FACEQUEUE, "keys", "create", "upload-cost"], env=env, check=True, capture_output=True, text=True
        )
        key = created.stdout.splitlines()[-1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        api = subprocess.Popen(
            [*FACEQUEUE, "api", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as http:
                for _ in range(150):
                    try:
                        http.get("/health/live")
                        break
                    except httpx.TransportError:
                        time.sleep(0.2)
                for kind in args.kinds:
                    for _ in range(20):  # warm-up: imports, connection pools, route contexts
                        send(http, kind, photo, key)
                    before, start = process_cpu_s(api.pid), time.perf_counter()
                    for _ in range(args.requests):
                        send(http, kind, photo, key)
                    wall = time.perf_counter() - start
                    cpu = process_cpu_s(api.pid) - before
                    images = args.requests * (GROUP if kind == "v2files" else 1)
                    print(
                        f"{kind:<8} api CPU {1000 * cpu / args.requests:6.2f} ms/request "
                        f"{1000 * cpu / images:6.2f} ms/image   "
                        f"wall {1000 * wall / args.requests:6.2f} ms/request (client included)"
                    )
        finally:
            api.terminate()
            api.wait(timeout=30)


if __name__ == "__main__":
    main()
