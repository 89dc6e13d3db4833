"""Bounded waits (`?wait=`) over the real queue: Redis pub/sub completion, Postgres, Celery workers."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sqlalchemy import Engine, event

from api.wait import hub
from facequeue.settings import get_settings
from tests.integration.conftest import wait_for
from tests.photos import astronaut, encode, hopper


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def comparable(media: dict) -> list[dict]:
    """A media result without what differs between two jobs of the same bytes (uids)."""
    return [{k: v for k, v in face.items() if k != "face_uuid"} for face in media["faces"]]


def test_sync_answer_equals_upload_then_poll(client, api_key, other_key, worker):  # type: ignore[no-untyped-def]
    data = encode(hopper())
    polled = client.post("/v2/media", json={"file_base64": b64(data)}, headers={"X-API-Key": api_key})
    assert polled.status_code == 202
    polled_result = wait_for(client, polled.json()["media_uuid"], api_key)
    # The same bytes by another tenant: a new job of its own, answered in the same call.
    synced = client.post(
        "/v2/media/file?wait=60",
        files={"file": ("h.jpg", data, "image/jpeg")},
        headers={"X-API-Key": other_key},
    )
    assert synced.status_code == 200, synced.text
    body = synced.json()
    assert body["status"] == "done" and body["media_uuid"] != polled_result["media_uuid"]
    assert comparable(body) == comparable(polled_result) and len(body["faces"]) == 1
    assert body == client.get(f"/v2/media/{body['media_uuid']}", headers={"X-API-Key": other_key}).json()

    # Recognition, synchronously: the face against its enrolled person.
    face = body["faces"][0]["face_uuid"]
    headers = {"X-API-Key": other_key}
    assert client.post("/v2/person", json={"faces_uuids": [face], "person_id": "grace@wait"}, headers=headers)
    recognized = client.post(
        "/v2/recognize?wait=60", json={"faces_uuids": [face], "targets": ["all@wait"]}, headers=headers
    )
    assert recognized.status_code == 200, recognized.text
    result = recognized.json()
    assert result["status"] == "done" and result["results"][0]["face_uuid"] == face
    polled_recognition = client.get(
        f"/v2/recognize/{result['recognize_uuid']}", headers={"X-API-Key": other_key}
    ).json()
    assert polled_recognition == result


def test_wait_that_times_out_leaves_a_durable_job(client, api_key, worker):  # type: ignore[no-untyped-def]
    data = encode(np.ascontiguousarray(astronaut()[::-1]))  # bytes no other test uploads
    started = time.monotonic()
    answer = client.post(
        "/v2/media?wait=0.05", json={"file_base64": b64(data)}, headers={"X-API-Key": api_key}
    )
    assert time.monotonic() - started < 5
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert set(accepted) == {"media_uuid", "checksum", "status"}
    assert wait_for(client, accepted["media_uuid"], api_key)["status"] == "done"


def test_fifty_concurrent_sync_calls_on_two_workers(client, api_key, workers, worker, monkeypatch):  # type: ignore[no-untyped-def]
    second = workers.start()
    monkeypatch.setattr(get_settings(), "sync_wait_s", 240.0)
    base = astronaut()
    images = []
    for i in range(50):  # 50 different files: one pixel differs
        rgb = base.copy()
        rgb[0, 0] = (i, 255 - i, 7)
        images.append(encode(rgb, "PNG"))

    statements: list[str] = []

    def record(_conn, _cursor, statement, *_):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)  # every engine of this (the api's) process

    def call(data: bytes):  # type: ignore[no-untyped-def]
        return client.post(
            "/v2/media?wait=240",
            json={"file_base64": b64(data), "detection_flags": "bestface"},
            headers={"X-API-Key": api_key},
        )

    waiters, _ = hub()
    peak = 0
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(50) as pool:
            pending = [pool.submit(call, data) for data in images]
            while not all(f.done() for f in pending):  # how many calls wait at once
                peak = max(peak, len(waiters.uids()))
                time.sleep(0.05)
            answers = [f.result() for f in pending]
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        second.stop()
    elapsed = time.monotonic() - started
    assert peak >= 10, f"only {peak} calls waited at the same time"
    assert [a.status_code for a in answers] == [200] * 50, [a.text for a in answers if a.status_code != 200]
    assert all(a.json()["status"] == "done" and len(a.json()["faces"]) == 1 for a in answers)
    assert len({a.json()["media_uuid"] for a in answers}) == 50
    # No polling loop: the api's queries per call are a fixed handful (auth, store, enqueue, one status
    # check, one final read), however long the calls waited (seconds, in line behind 49 others).
    per_call = len(statements) / 50
    assert 3 <= per_call < 25, (elapsed, per_call, statements[:30])
    status_checks = [
        s for s in statements if s.lstrip().startswith("SELECT images.uid") and "images.status IN" in s
    ]
    # One status check per waiting call, then only the notification (a listener reconnection under load
    # may add one re-check per waiter; a polling loop would add one per tick).
    assert 50 <= len(status_checks) <= 100, (len(status_checks), elapsed)


def test_waits_survive_a_lost_subscription(client, api_key, worker):  # type: ignore[no-untyped-def]
    """Redis drops the api's pub/sub connection while calls wait: the listener reconnects, every waiter
    re-checks its job once, and the calls still answer with the result."""
    import os

    import redis

    from api.wait import LISTENER_NAME
    from tests.integration.conftest import REDIS_URL

    waiters, _ = hub()  # the listener is subscribed
    rechecks = []
    wake_all = waiters.wake_all

    def counted() -> None:
        rechecks.append(len(waiters.uids()))
        wake_all()

    waiters.wake_all = counted  # type: ignore[method-assign]
    server = redis.Redis.from_url(REDIS_URL)
    name = LISTENER_NAME.format(pid=os.getpid())

    def call(i: int):  # type: ignore[no-untyped-def]
        rgb = hopper().copy()
        rgb[0, 0] = (i, 3, 5)
        return client.post(
            "/v2/media?wait=60",
            json={"file_base64": b64(encode(rgb, "PNG")), "detection_flags": "bestface"},
            headers={"X-API-Key": api_key},
        )

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(call, i) for i in range(4)]
        time.sleep(0.3)
        ours = [c for c in server.client_list() if c.get("name") == name]
        assert ours, "the listener's connection is named"
        for connection in ours:  # only this process's listener, never another's
            server.client_kill_filter(_id=connection["id"])
        answers = [f.result(timeout=90) for f in pending]
    waiters.wake_all = wake_all  # type: ignore[method-assign]
    assert rechecks, "the reconnection made the waiters re-check their jobs"
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["status"] == "done" for a in answers)
    deadline = time.monotonic() + 10
    while not [c for c in server.client_list() if c.get("name") == name]:
        assert time.monotonic() < deadline, "the listener reconnected"
        time.sleep(0.2)
