"""Throughput under load: admission limits (429), interactive before bulk, micro-batching, metrics.

Real api, Postgres, Redis and `celery worker` processes, as in test_durability.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid

import httpx
import numpy as np
import pytest
from sqlalchemy import select, text

from facequeue.settings import get_settings
from tests.integration.conftest import make_key, wait_for
from tests.integration.helpers import tiny_png
from tests.photos import astronaut, cat, encode, group, hopper

METERED: dict[str, int] = {}  # the metrics port of the worker the SIGKILL test leaves running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def db_rows(sql: str, **params: object) -> list:
    from schema.db import get_engine

    with get_engine().connect() as connection:
        return list(connection.execute(text(sql), params))


def unique(data: bytes) -> bytes:
    """Bytes no other test uploads (a JPEG ignores trailing bytes): dedupe never returns another's job."""
    return data + f"throughput-{uuid.uuid4()}".encode()


def upload(client, key: str, data: bytes, flags: str = "") -> str:  # type: ignore[no-untyped-def]
    response = client.post(
        "/v2/media/file",
        files={"file": ("p.jpg", unique(data), "image/jpeg")},
        data={"detection_flags": flags},
        headers={"X-API-Key": key},
    )
    assert response.status_code == 202, response.text
    return response.json()["media_uuid"]


def bulk_jobs(key: str, photos: list[bytes], flags: str = "") -> list[str]:
    """Bulk work: uploads that name a batch (create_image_job(..., batch=...), as the batch option does)."""
    from api.deps import key_sha256
    from api.uploads import create_image_job
    from schema.db import session_scope
    from schema.tables import ApiKey, Tenant

    name = f"throughput-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        tenant = session.execute(
            select(Tenant).join(ApiKey).where(ApiKey.key_sha256 == key_sha256(key))
        ).scalar_one()
        return [
            create_image_job(
                session, get_settings(), tenant, data=unique(data), detection_flags=flags, batch=name
            ).uid
            for data in photos
        ]


def test_requests_over_the_rate_limit_get_429_with_retry_after(client, monkeypatch):  # type: ignore[no-untyped-def]
    key = make_key("rate-limited")
    monkeypatch.setattr(get_settings(), "tenant_max_requests_per_s", 3)
    missing = str(uuid.uuid4())
    answers = [client.get(f"/v2/media/{missing}", headers={"X-API-Key": key}) for _ in range(10)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]
    assert limited[0].json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 2
    assert {a.status_code for a in answers} <= {404, 429}
    time.sleep(1.1)  # a new window: admitted again
    assert client.get(f"/v2/media/{missing}", headers={"X-API-Key": key}).status_code == 404
    v1 = [client.post("/v1/GetImageInfo", json={"api_key": key, "img_uid": missing}) for _ in range(10)]
    refused = [a for a in v1 if a.json()["int_response"] == -61]
    assert refused and refused[0].status_code == 200 and "Retry-After" in refused[0].headers


def test_queue_limit_answers_429_and_a_repeat_is_still_answered(client, monkeypatch):  # type: ignore[no-untyped-def]
    key = make_key("queue-limited")
    monkeypatch.setattr(get_settings(), "tenant_max_queued", 3)
    monkeypatch.setattr(get_settings(), "queue_full_retry_after_s", 7)
    photos = [tiny_png() + f"queue-limit-{i}".encode() for i in range(5)]
    headers = {"X-API-Key": key}
    answers = [
        client.post("/v2/media/file", files={"file": ("p.png", p, "image/png")}, headers=headers)
        for p in photos
    ]
    assert [a.status_code for a in answers[:3]] == [202, 202, 202]
    refused = answers[3]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "TOO_MANY_QUEUED"
    assert refused.headers["Retry-After"] == "7"
    # The same bytes again add no work: answered with the existing job even while the queue is full.
    again = client.post("/v2/media/file", files={"file": ("p.png", photos[0], "image/png")}, headers=headers)
    assert again.status_code == 202 and again.json()["media_uuid"] == answers[0].json()["media_uuid"]


def test_a_multi_file_request_is_admitted_whole_under_the_queue_limit(client, monkeypatch):  # type: ignore[no-untyped-def]
    key = make_key("queue-limited-files")
    monkeypatch.setattr(get_settings(), "tenant_max_queued", 3)
    headers = {"X-API-Key": key}

    def files(tag: str) -> list:
        return [("file", (f"{i}.png", tiny_png() + f"{tag}-{i}".encode())) for i in range(5)]

    admitted = client.post("/v2/media/files", files=files("first"), headers=headers)
    assert admitted.status_code == 202 and len(admitted.json()["accepted"]) == 5, "under the limit: all of it"
    refused = client.post("/v2/media/files", files=files("second"), headers=headers)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "TOO_MANY_QUEUED"
    refused_shas = [hashlib.sha256(data).hexdigest() for _, (_, data) in files("second")]
    assert not db_rows("SELECT uid FROM images WHERE sha256 = ANY(:shas)", shas=refused_shas), (
        "nothing of a refused request is kept"
    )


def test_interactive_lane_serves_uploads_and_never_takes_bulk_work(client, api_key, workers):  # type: ignore[no-untyped-def]
    """`facequeue worker --interactive-only` (compose's worker-interactive) beside a bulk backlog."""
    workers.stop_all()
    backlog = bulk_jobs(api_key, [tiny_png() + f"lane-{uuid.uuid4()}".encode() for _ in range(6)])
    lane = workers.start(interactive_only=True)
    try:
        uid = upload(client, api_key, encode(astronaut()), "bestface")
        body = wait_for(client, uid, api_key, timeout=120)  # only the lane runs: it took the job
        assert body["status"] == "done" and len(body["faces"]) == 1
        time.sleep(2)  # a worker listening on the bulk queue too would have taken these by now
        queued = db_rows("SELECT count(*) FROM images WHERE uid = ANY(:u) AND status = 'queued'", u=backlog)[
            0
        ][0]
        assert queued == len(backlog), "the interactive lane took bulk work"
    finally:
        lane.stop()
    workers.start()  # a full worker drains the backlog
    deadline = time.monotonic() + 90
    while db_rows(
        "SELECT 1 FROM images WHERE uid = ANY(:u) AND status IN ('queued', 'processing')", u=backlog
    ):
        assert time.monotonic() < deadline, "the bulk backlog never drained"
        time.sleep(0.2)


def test_interactive_upload_completes_while_a_bulk_backlog_is_queued(client, api_key, workers):  # type: ignore[no-untyped-def]
    workers.stop_all()
    backlog = bulk_jobs(api_key, [tiny_png() + f"bulk-{uuid.uuid4()}".encode() for _ in range(24)])
    # One job per task here and two seconds each: the three uploads below are all queued while the first
    # bulk job runs, and the backlog outlasts them by far with this one worker.
    slow = workers.start(FACEQUEUE_DEBUG_TASK_DELAY_S="2", FACEQUEUE_BATCH_MAX_JOBS="1")
    try:
        deadline = time.monotonic() + 60
        while not db_rows("SELECT 1 FROM images WHERE queue = 'images_bulk' AND status = 'processing'"):
            assert time.monotonic() < deadline, "the worker never started on the backlog"
            time.sleep(0.1)
        photos = [encode(hopper()), encode(astronaut()), encode(hopper(), quality=80)]
        uids = [upload(client, api_key, photo, "bestface") for photo in photos]
        for uid in uids:
            body = wait_for(client, uid, api_key, timeout=90)
            assert body["status"] == "done" and len(body["faces"]) == 1
        waiting = db_rows(
            "SELECT count(*) FROM images WHERE uid = ANY(:uids) AND status = 'queued'", uids=backlog
        )[0][0]
        assert waiting >= 12, f"only {waiting} of 24 bulk jobs were still queued: bulk went first"
        # Interactive first, not round robin: no bulk job ran between the three interactive ones.
        first, last = db_rows(
            "SELECT min(finished_at), max(finished_at) FROM images WHERE uid = ANY(:u)", u=uids
        )[0]
        between = db_rows(
            "SELECT count(*) FROM images WHERE uid = ANY(:u) AND finished_at > :a AND finished_at < :b",
            u=backlog,
            a=first,
            b=last,
        )[0][0]
        assert between == 0, f"{between} bulk jobs ran between the interactive ones"
    finally:
        slow.stop()
    workers.start()  # drains the rest quickly (no delay) and serves the tests that follow
    deadline = time.monotonic() + 90
    while db_rows(
        "SELECT 1 FROM images WHERE uid = ANY(:u) AND status IN ('queued', 'processing')", u=backlog
    ):
        assert time.monotonic() < deadline, "the bulk backlog never drained"
        time.sleep(0.2)


def _embedding(client, key: str, uid: str) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    body = client.get(f"/v2/media/{uid}?embeddings=true", headers={"X-API-Key": key}).json()
    faces = sorted(body["faces"], key=lambda f: f["x"])  # left to right
    return [np.asarray(f["embedding"], dtype=np.float32) for f in faces]


def test_micro_batched_jobs_survive_a_sigkill_and_each_get_their_own_result(client, api_key, workers):  # type: ignore[no-untyped-def]
    workers.stop_all()  # only the slow worker below may take the jobs
    photos = {"astronaut": astronaut(), "hopper": hopper(), "group": group(), "cat": cat()}
    uids = dict(
        zip(
            photos,
            bulk_jobs(api_key, [encode(p, quality=90) for p in photos.values()], "bestface,classifiers"),
            strict=True,
        )
    )
    slow = workers.start(
        FACEQUEUE_DEBUG_TASK_DELAY_S="60", FACEQUEUE_BATCH_MAX_JOBS="4", FACEQUEUE_BATCH_WAIT_MS="2000"
    )
    deadline = time.monotonic() + 120
    while (
        len(
            db_rows(
                "SELECT 1 FROM images WHERE uid = ANY(:u) AND status = 'processing'", u=list(uids.values())
            )
        )
        < 4
    ):
        assert time.monotonic() < deadline, "the four jobs were never claimed together"
        time.sleep(0.1)
    slow.kill()  # one prefork child held all four: they were one micro-batch
    port = free_port()
    workers.start(FACEQUEUE_BATCH_MAX_JOBS="4", FACEQUEUE_WORKER_METRICS_PORT=str(port))
    bodies = {name: wait_for(client, uid, api_key, timeout=120) for name, uid in uids.items()}
    assert all(body["status"] == "done" for body in bodies.values()), bodies
    attempts = db_rows("SELECT attempts FROM images WHERE uid = ANY(:u)", u=list(uids.values()))
    assert all(a >= 2 for (a,) in attempts), "each job was taken again after the kill"
    # Each job has its own image's answer, not a neighbour's from the same batch.
    for name, rgb in photos.items():
        assert (bodies[name]["width"], bodies[name]["height"]) == (rgb.shape[1], rgb.shape[0])
    assert [len(bodies[n]["faces"]) for n in ("astronaut", "hopper", "cat")] == [1, 1, 0]
    assert len(bodies["group"]["faces"]) == 1  # bestface keeps one
    (a,), (h,) = _embedding(client, api_key, uids["astronaut"]), _embedding(client, api_key, uids["hopper"])
    (g,) = _embedding(client, api_key, uids["group"])
    assert float(a @ h) < 0.6, "two different people"
    assert max(float(g @ a), float(g @ h)) > 0.9, "the group's best face is one of the two portraits"
    METERED["port"] = port


def metric(text_: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (summed when several match)."""
    total, found = 0.0, False
    for line in text_.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(match.group(4)), True
    assert found, f"no series {name}{labels}"
    return total


def test_metrics_from_the_api_and_the_worker_after_a_real_job(client, api_key, workers):  # type: ignore[no-untyped-def]
    port = METERED.get("port")
    if port is None:
        port = free_port()
        workers.start(FACEQUEUE_WORKER_METRICS_PORT=str(port))
    uid = upload(client, api_key, encode(hopper(), quality=85), "classifiers")
    assert wait_for(client, uid, api_key, timeout=120)["status"] == "done"
    deadline = time.monotonic() + 30
    while True:  # the worker's HTTP server answers once the worker is up
        try:
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            if "facequeue_jobs_finished_total" in scraped:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "no worker metrics"
        time.sleep(0.5)
    assert metric(scraped, "facequeue_jobs_finished_total", queue="images", status="done") >= 1
    assert metric(scraped, "facequeue_faces_total", queue="images") >= 1
    assert metric(scraped, "facequeue_job_latency_seconds_count", queue="images") >= 1
    assert metric(scraped, "facequeue_job_latency_seconds_bucket", queue="images", le="+Inf") >= 1
    assert metric(scraped, "facequeue_stage_seconds_count", stage="detect") >= 1
    assert metric(scraped, "facequeue_stage_seconds_sum", stage="age_gender") > 0
    assert metric(scraped, "facequeue_batch_jobs_count", queue="images") >= 1

    api = client.get("/metrics")
    assert api.status_code == 200 and api.headers["content-type"].startswith("text/plain")
    assert metric(api.text, "facequeue_uploads_total", queue="images") >= 1
    assert metric(api.text, "facequeue_request_seconds_count", method="POST", route="/v2/media/file") >= 1
    assert metric(api.text, "facequeue_jobs", kind="image", queue="images", status="done") >= 1
    for queue in ("images", "images_bulk", "recognize", "callbacks"):
        assert metric(api.text, "facequeue_queue_depth", queue=queue) >= 0


@pytest.fixture(autouse=True, scope="module")
def _restore_a_worker(workers):  # type: ignore[no-untyped-def]
    yield
    if not any(w.process.poll() is None for w in workers.running):
        workers.start()
