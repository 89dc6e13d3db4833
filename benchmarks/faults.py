"""Fault benchmark: N jobs with callbacks through worker SIGKILLs and broker and database restarts.

Runs the production setup in miniature with the DEFAULT durability settings: a private Postgres and Redis
(tests/integration/services.py; the shared servers are never touched), `facequeue api`, two
`facequeue worker` processes, and a callback receiver on 127.0.0.2. A client uploads N distinct photos
(each with a callback_url) at a steady rate while another polls; meanwhile the faults hit in turn:

  worker SIGKILL (a replacement starts at once) x2, Redis killed and restarted empty, Postgres stopped
  (immediate mode) and restarted.

Prints lost jobs, lost callbacks, duplicates, the 5xx answers, and the time to recover after each fault.

    nice -n 10 .venv/bin/python benchmarks/faults.py --jobs 200
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.services import Stack  # noqa: E402
from tests.photos import astronaut, encode, group, hopper  # noqa: E402


class Receiver:
    """Callback receiver on 127.0.0.2: counts deliveries per Idempotency-Key."""

    def __init__(self, delay_s: float) -> None:
        self.keys: collections.Counter[str] = collections.Counter()
        self.uids: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                time.sleep(delay_s)  # a receiver that takes a moment widens the mid-callback window
                receiver.keys[self.headers.get("Idempotency-Key", "")] += 1
                receiver.uids.add(body.get("media_uuid"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.url = f"http://127.0.0.2:{self.httpd.server_address[1]}/callback"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


class Client:
    """Uploads at a steady rate (a real client: retries 503 after Retry-After) and polls meanwhile."""

    def __init__(self, stack: Stack, callback: str, jobs: int, rate: float) -> None:
        self.stack, self.callback, self.jobs, self.rate = stack, callback, jobs, rate
        self.uids: list[str] = []
        self.answers: collections.Counter[str] = collections.Counter()
        self.done = threading.Event()
        photos = [encode(astronaut()), encode(hopper()), encode(group())]
        self.payloads = [photos[i % 3] + f"#{i}-{time.time_ns()}".encode() for i in range(jobs)]

    def _count(self, kind: str, status: int | str) -> None:
        self.answers[f"{kind} {status}"] += 1

    def upload(self) -> None:
        with httpx.Client(
            base_url=self.stack.base, headers={"X-API-Key": self.stack.key}, timeout=30
        ) as http:
            start = time.monotonic()
            for index, data in enumerate(self.payloads):
                time.sleep(max(0.0, start + index / self.rate - time.monotonic()))
                body = {"file_base64": base64.b64encode(data).decode(), "callback_url": self.callback}
                while True:
                    try:
                        answer = http.post("/v2/media", json=body)
                    except httpx.HTTPError as exc:
                        self._count("upload", type(exc).__name__)
                        time.sleep(1)
                        continue
                    self._count("upload", answer.status_code)
                    if answer.status_code == 202:
                        self.uids.append(answer.json()["media_uuid"])
                        break
                    time.sleep(float(answer.headers.get("Retry-After", 1)))
        self.done.set()

    def poll(self, stop: threading.Event) -> None:
        with httpx.Client(
            base_url=self.stack.base, headers={"X-API-Key": self.stack.key}, timeout=30
        ) as http:
            while not stop.is_set():
                if self.uids:
                    try:
                        self._count("poll", http.get(f"/v2/media/{random.choice(self.uids)}").status_code)
                    except httpx.HTTPError as exc:
                        self._count("poll", type(exc).__name__)
                time.sleep(0.1)


def rows(stack: Stack, where: str) -> set[str]:
    try:
        return {row[0] for row in stack.sql(f"SELECT uid FROM images WHERE {where}")}
    except Exception:
        return set()


def wait_all(
    stack: Stack, uids: set[str], condition: str, since: float | None = None, timeout: float = 600
) -> float | None:
    """Seconds from `since` (default now) until every uid satisfies `condition` (SQL), polled twice a
    second; None on timeout."""
    start = time.monotonic() if since is None else since
    pending = set(uids)
    while pending and time.monotonic() - start < timeout:
        try:
            ready = {row[0] for row in stack.sql(f"SELECT uid FROM images WHERE {condition}")}
            pending -= ready
        except Exception:
            pass  # the database is restarting
        if pending:
            time.sleep(0.5)
    return None if pending else time.monotonic() - start


def snapshot(stack: Stack, where: str) -> dict[str, int]:
    """uid -> attempts of the rows matching `where`."""
    try:
        return dict(stack.sql(f"SELECT uid, attempts FROM images WHERE {where}"))
    except Exception:
        return {}


def wait_resent(stack: Stack, before: dict[str, int], since_db: object, since: float) -> float | None:
    """Seconds from `since` until every job in `before` was re-sent or taken again: finished, claimed by a
    new attempt, or put back in the queue after `since_db` (the reaper stamps updated_at when it sends)."""
    while time.monotonic() - since < 600:
        try:
            state = stack.sql(
                "SELECT uid, status, attempts, updated_at FROM images WHERE uid = ANY(:u)", u=list(before)
            )
            if all(
                status in ("done", "error")
                or attempts > before[uid]
                or (status == "queued" and updated > since_db)
                for uid, status, attempts, updated in state
            ):
                return time.monotonic() - since
        except Exception:
            pass
        time.sleep(0.25)
    return None


def db_now(stack: Stack) -> object:
    return stack.sql("SELECT now()")[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2.0, help="uploads per second")
    parser.add_argument("--down", type=float, default=5, help="seconds Redis and Postgres stay down")
    parser.add_argument("--callback-delay", type=float, default=0.2, help="receiver answers after this")
    args = parser.parse_args()

    # Only what the setup needs: the receiver is on a private address. Durability settings stay default.
    os.environ["FACEQUEUE_URL_ALLOWED_NETWORKS"] = "127.0.0.2/32"
    for name in list(os.environ):
        if name.startswith("FACEQUEUE_") and any(
            k in name for k in ("LEASE", "REAPER", "REQUEUE", "ATTEMPTS")
        ):
            del os.environ[name]
    receiver = Receiver(args.callback_delay)
    stack = Stack()
    faults: list[tuple[str, str]] = []
    try:
        stack.start_api(workers=2)
        workers = [stack.start_worker(), stack.start_worker()]
        warm = Client(stack, receiver.url, 2, 10)
        warm.upload()
        if wait_all(stack, set(warm.uids), "status = 'done'", timeout=180) is None:
            raise SystemExit("workers did not start")
        client = Client(stack, receiver.url, args.jobs, args.rate)
        stop_polls = threading.Event()
        threads = [
            threading.Thread(target=client.upload),
            threading.Thread(target=client.poll, args=(stop_polls,)),
        ]
        for thread in threads:
            thread.start()
        began = time.monotonic()

        def at(second: float) -> None:
            time.sleep(max(0.0, began + second - time.monotonic()))

        for number, second in ((1, 12), (2, 28)):
            at(second)
            victim = workers.pop(0)
            before = snapshot(stack, "status = 'processing'")
            killed_db = db_now(stack)
            Stack.kill(victim)
            workers.append(stack.start_worker())
            replaced = time.monotonic()
            running = set(before)
            resent = wait_resent(stack, before, killed_db, replaced)
            took = wait_all(stack, running, "status IN ('done', 'error')", replaced)
            sent = wait_all(stack, running, "callback_status IN ('sent', 'failed')", replaced)
            faults.append(
                (
                    f"worker SIGKILL #{number} ({len(running)} jobs processing, either worker)",
                    f"re-sent {resent:.1f} s, finished {took:.1f} s, callbacks sent {sent:.1f} s after the "
                    "replacement was started"
                    if None not in (resent, took, sent)
                    else "NOT recovered",
                )
            )
        at(44)
        stack.redis.stop()
        time.sleep(args.down)
        before = snapshot(stack, "status = 'queued'")  # messages die with Redis, incl. uploads meanwhile
        waiting = set(before)
        stack.redis.start()
        back, back_db = time.monotonic(), db_now(stack)
        resent = wait_resent(stack, before, back_db, back)
        took = wait_all(stack, waiting, "status IN ('done', 'error')", back)
        sent = wait_all(stack, waiting, "callback_status IN ('sent', 'failed')", back)
        faults.append(
            (
                f"Redis killed, {args.down:.0f} s down, restarted empty ({len(waiting)} queued jobs lost their message)",
                f"re-sent {resent:.1f} s, all finished {took:.1f} s, callbacks sent {sent:.1f} s after Redis "
                "returned"
                if None not in (resent, took, sent)
                else "NOT recovered",
            )
        )
        at(64)
        running = rows(stack, "status IN ('processing', 'queued')")
        stack.postgres.stop()
        time.sleep(args.down)
        stack.postgres.start()
        back = time.monotonic()
        first_ok = None
        while first_ok is None and time.monotonic() - back < 60:
            try:
                if (
                    httpx.get(
                        f"{stack.base}/v2/media/{client.uids[0]}", headers={"X-API-Key": stack.key}
                    ).status_code
                    == 200
                ):
                    first_ok = time.monotonic() - back
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        took = wait_all(stack, running, "status IN ('done', 'error')", back)
        faults.append(
            (
                f"Postgres stopped (immediate), {args.down:.0f} s down, restarted ({len(running)} jobs unfinished)",
                f"api answering {first_ok:.1f} s, those jobs finished {took:.1f} s after Postgres returned"
                if first_ok is not None and took is not None
                else "NOT recovered",
            )
        )
        client.done.wait()
        uids = set(client.uids)
        finished = wait_all(
            stack, uids, "status IN ('done', 'error') AND callback_status IN ('sent', 'failed')"
        )
        stop_polls.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began
        summary = stack.sql(
            "SELECT status, callback_status, count(*), sum(CASE WHEN attempts > 1 THEN 1 ELSE 0 END) "
            "FROM images GROUP BY status, callback_status"
        )
        done = rows(stack, "status = 'done'") & uids
        errors = rows(stack, "status = 'error'") & uids
        sent = rows(stack, "callback_status = 'sent'") & uids
        reruns = sum(row[3] or 0 for row in summary)
        extra = sum(count - 1 for key, count in receiver.keys.items() if count > 1)
        server_errors = {
            k: v for k, v in client.answers.items() if k.split()[1].startswith("5") and k.split()[1] != "503"
        }
        unavailable = {k: v for k, v in client.answers.items() if k.endswith(" 503")}
        alive = sum(worker.poll() is None for worker in workers)
        print(
            f"\n{args.jobs} jobs with callbacks, {elapsed:.0f} s; default durability settings; rate {args.rate}/s"
        )
        print(f"uploads accepted: {len(uids)} distinct uids (expected {args.jobs})")
        print(f"lost jobs: {len(uids - done - errors)}   (done {len(done)}, error {len(errors)})")
        print(
            f"lost callbacks: {len(uids - (receiver.uids & sent))}   (delivered {len(receiver.uids & uids)})"
        )
        print(f"duplicate callback deliveries (same Idempotency-Key): {extra}")
        print(f"jobs re-run after a fault (attempts > 1): {reruns}; duplicate jobs: {len(uids) - args.jobs}")
        print(f"5xx other than 503: {sum(server_errors.values())} {server_errors or ''}")
        print(f"503 with Retry-After: {sum(unavailable.values())} {unavailable or ''}")
        print(f"all answers: {dict(sorted(client.answers.items()))}")
        print(f"workers alive at the end: {alive}/{len(workers)}; everything settled: {finished is not None}")
        print("\n| fault | recovery |\n| --- | --- |")
        for fault, recovery in faults:
            print(f"| {fault} | {recovery} |")
        for index in range(len(stack.workers)):
            if "Unrecoverable" in stack.worker_log(index):
                print(f"worker {index}: Unrecoverable error in its log")
    finally:
        stack.close()
        receiver.httpd.shutdown()


if __name__ == "__main__":
    main()
