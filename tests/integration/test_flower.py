"""Operators watch the queues in Flower: it runs against the same broker and shows our tasks.

Workers send task events only while Flower runs (FACEQUEUE_TASK_EVENTS is off): Flower switches them on,
so this test also fails if that stops working (checked with FLOWER_ENABLE_EVENTS=false)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time

import httpx

from tests.integration.conftest import ROOT, wait_for
from tests.integration.helpers import tiny_png


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flower_shows_processed_tasks(client, api_key, worker):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"}
    flower = subprocess.Popen(
        [sys.executable, "-m", "facequeue.cli", "flower", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/workers", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Flower did not start"
            time.sleep(0.5)
        # Flower answers before its event receiver has caught up; a task it saw only half of (no
        # "received" event: no name, no args) is not what we look for, so upload again until one is whole.
        for attempt in range(5):
            data = tiny_png() + f"flower {attempt}".encode()
            body = {"file_base64": base64.b64encode(data).decode()}
            uid = client.post("/v2/media", json=body, headers={"X-API-Key": api_key}).json()["media_uuid"]
            assert wait_for(client, uid, api_key)["status"] == "done"
            deadline = time.monotonic() + 10
            seen: list[dict] = []
            while not seen and time.monotonic() < deadline:
                tasks = httpx.get(f"{base}/api/tasks", timeout=5).json()
                seen = [
                    t
                    for t in tasks.values()
                    if t.get("name") == "facequeue.process_image" and uid in str(t.get("args"))
                ]
                time.sleep(0.5)
            if seen:
                assert seen[0]["state"] == "SUCCESS"
                break
        else:
            raise AssertionError(f"Flower never showed a whole task: {list(tasks.values())[:3]}")
    finally:
        flower.terminate()
        flower.wait(timeout=20)


def task_events_while(run_job) -> list[str]:  # type: ignore[no-untyped-def]
    """The types of the task events on the broker while `run_job()` runs a job to its end."""
    from workers.celery_app import app

    types: list[str] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": lambda event: types.append(event["type"])})
        listener = threading.Thread(target=receiver.capture, kwargs={"limit": None, "wakeup": False})
        listener.start()
        try:
            time.sleep(1)  # subscribed before the job starts
            run_job()
            time.sleep(2)  # the last events of the job
        finally:
            receiver.should_stop = True
            listener.join(timeout=10)
    return [t for t in types if t.startswith("task-")]


def test_task_events_are_off_unless_asked_for(client, api_key, workers):  # type: ignore[no-untyped-def]
    """Off by default (Flower switches them on when it runs); FACEQUEUE_TASK_EVENTS=true sends them always."""

    def run_job() -> None:
        body = {"file_base64": base64.b64encode(tiny_png() + os.urandom(8)).decode()}
        uid = client.post("/v2/media", json=body, headers={"X-API-Key": api_key}).json()["media_uuid"]
        assert wait_for(client, uid, api_key)["status"] == "done"

    workers.stop_all()  # a worker Flower has seen keeps the events it switched on
    try:
        workers.start()
        assert task_events_while(run_job) == [], "a default worker sends no task events"
        workers.stop_all()
        workers.start(FACEQUEUE_TASK_EVENTS="true")
        assert "task-succeeded" in task_events_while(run_job)
    finally:
        workers.stop_all()  # the next test gets an ordinary worker
