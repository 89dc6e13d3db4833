"""Fault injection on real services: Redis and Postgres restarts and worker SIGKILLs, mid-job and
mid-callback. A private stack (tests/integration/services.py) is restarted, never the shared servers.

Timings come from the integration settings (lease 6 s, reaper every 1 s); benchmarks/faults.py measures
the same faults with the default settings.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.helpers import LocalServer, tiny_png
from tests.integration.services import Stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    stack = Stack()
    try:
        stack.start_api()
        stack.start_worker()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[LocalServer]:
    server = LocalServer(tiny_png(), hang_s=20)
    yield server
    server.close()


_counter = iter(range(10**6))


def upload(stack: Stack, callback: str | None = None) -> str:
    """A distinct tiny image (no faces: fast), optionally with a callback."""
    data = tiny_png() + f"fault-{time.time_ns()}-{next(_counter)}".encode()
    body = {"file_base64": base64.b64encode(data).decode(), "detection_flags": "bestface"}
    if callback:
        body["callback_url"] = callback
    response = httpx.post(f"{stack.base}/v2/media", json=body, headers={"X-API-Key": stack.key}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["media_uuid"]


def row(stack: Stack, uid: str) -> dict:
    result = stack.sql(
        "SELECT status, attempts, callback_status, callback_attempts FROM images WHERE uid = :u", u=uid
    )
    return dict(result[0]._mapping)


def wait_until(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds it took; fails after `timeout`. Database errors while it restarts count as 'not yet'."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout}s")


def test_broker_restart_keeps_workers_and_sends_what_it_lost(stack: Stack, receiver: LocalServer) -> None:
    first = upload(stack)
    wait_until(lambda: row(stack, first)["status"] == "done", 120, "the worker taking jobs")
    stack.redis.stop()
    started = time.monotonic()
    uids = [upload(stack, receiver.url("/callback")) for _ in range(3)]  # accepted while Redis is down
    assert time.monotonic() - started < 10, "uploads must not hang on a dead broker"
    assert all(row(stack, uid)["status"] == "queued" for uid in uids)
    time.sleep(2)
    stack.redis.start()  # empty: without persistence every message is gone
    took = wait_until(
        lambda: all(row(stack, uid)["callback_status"] == "sent" for uid in uids),
        45,
        "jobs accepted during the outage done and their callbacks sent",
    )
    print(f"broker back -> {len(uids)} jobs done and called back in {took:.1f}s")
    for down_s in (0, 0.5, 0):  # more restarts, quick ones included
        stack.redis.restart(down_s)
        time.sleep(1)
    last = upload(stack)
    wait_until(lambda: row(stack, last)["status"] == "done", 60, "a job after the restarts")
    assert stack.workers[0].poll() is None, "a broker restart must never end a worker"
    log = stack.worker_log(0)
    # A task that finishes just as Redis restarts cannot ack ("Couldn't ack", logged CRITICAL by Celery):
    # harmless here, its job is committed and a redelivered message finds it done. Nothing else may be.
    critical = [line for line in log.splitlines() if "CRITICAL" in line and "Couldn't ack" not in line]
    assert "Unrecoverable error" not in log and not critical, critical
    assert "hostname" not in log


def test_worker_killed_mid_callback_delivers_again_with_the_same_key(
    stack: Stack, receiver: LocalServer
) -> None:
    receiver.received.clear()
    receiver.keys.clear()
    uid = upload(stack, receiver.url("/callback-hang-first"))
    wait_until(lambda: receiver.received, 60, "the first callback POST")  # the worker now holds it
    Stack.kill(stack.workers[0])
    stack.start_worker()
    took = wait_until(lambda: row(stack, uid)["callback_status"] == "sent", 60, "the callback re-sent")
    print(f"callback re-sent {took:.1f}s after the kill")
    assert len(receiver.received) >= 2  # at least once: the receiver saw it twice ...
    assert set(receiver.keys) == {f"{uid}:done"}  # ... with one idempotency key to drop the repeat
    assert row(stack, uid)["status"] == "done"


def test_a_job_longer_than_its_lease_runs_once(stack: Stack) -> None:
    """The lease (6 s here) is renewed while the job runs: a 10 s job is never taken for dead and re-run."""
    for worker in stack.workers:
        Stack.kill(worker)
    stack.start_worker(FACEQUEUE_DEBUG_TASK_DELAY_S="10")  # kept for the next test
    uid = upload(stack)
    wait_until(lambda: row(stack, uid)["status"] == "processing", 90, "the long job starting")
    stack.start_worker()  # an idle worker whose reaper would take an expired lease
    wait_until(lambda: row(stack, uid)["status"] == "done", 60, "the long job")
    assert row(stack, uid)["attempts"] == 1


def test_callback_owed_while_the_broker_was_down_is_sent_after(stack: Stack, receiver: LocalServer) -> None:
    """The job commits while Redis is away, so its callback message cannot be sent: the same state as a
    worker killed between committing the job and sending the message (due in the outbox, no message)."""
    Stack.kill(stack.workers[-1])  # only the slow worker of the previous test is left
    receiver.received.clear()
    uid = upload(stack, receiver.url("/callback"))
    wait_until(lambda: row(stack, uid)["status"] == "processing", 90, "the slow job starting")
    stack.redis.stop()
    wait_until(lambda: row(stack, uid)["status"] == "done", 30, "the job committed during the outage")
    assert row(stack, uid)["callback_status"] == "pending" and not receiver.received
    stack.redis.start()
    took = wait_until(lambda: row(stack, uid)["callback_status"] == "sent", 45, "the owed callback")
    print(f"owed callback sent {took:.1f}s after the broker returned")
    assert receiver.received and receiver.keys[-1] == f"{uid}:done"


def test_database_restart_answers_503_never_500_and_the_job_resumes(stack: Stack) -> None:
    for worker in stack.workers:
        Stack.kill(worker)
    # The default lease (30 s) outlasts this outage; with a shorter one the job could be re-run instead.
    stack.start_worker(FACEQUEUE_DEBUG_TASK_DELAY_S="2", FACEQUEUE_JOB_LEASE_S="30")
    uid = upload(stack)
    wait_until(lambda: row(stack, uid)["status"] == "processing", 90, "the job starting")
    statuses: list[int] = []
    retry_after: list[str | None] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=stack.base, headers={"X-API-Key": stack.key}, timeout=30) as client:
            while not stop.is_set():
                answer = client.get(f"/v2/media/{uid}")
                statuses.append(answer.status_code)
                retry_after.append(answer.headers.get("Retry-After"))
                time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    stack.postgres.restart(down_s=4)  # longer than the request's wait (3 s) and the job's remaining work
    back = time.monotonic()
    took = wait_until(lambda: row(stack, uid)["status"] == "done", 60, "the job finished after the restart")
    time.sleep(1)
    stop.set()
    poller.join()
    print(f"job done {took:.1f}s after the database returned; answers {sorted(set(statuses))}")
    assert 500 not in statuses
    assert set(statuses) <= {200, 503} and 503 in statuses and statuses[-1] == 200
    assert all(after for status, after in zip(statuses, retry_after, strict=True) if status == 503)
    assert row(stack, uid)["attempts"] == 1, "resumed at once, not re-run after its lease lapsed"
    assert time.monotonic() - back < 60
