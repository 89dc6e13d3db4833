"""Nothing is lost: broker messages that vanish and workers killed mid-task still end in a finished job.

These run first (file order) so that no other worker is consuming while they set up their scenario.
"""

from __future__ import annotations

import base64
import time

import redis
from sqlalchemy import text

from tests.integration.conftest import REDIS_URL, wait_for
from tests.integration.helpers import FACE_JPEG


def upload(client, key: str, data: bytes, flags: str = "") -> str:  # type: ignore[no-untyped-def]
    body = {"imagefile_data": base64.b64encode(data).decode(), "detection_flags": flags}
    response = client.post("/v1/UploadNewImage_File", json=body, headers={"X-API-Key": key})
    assert response.json()["int_response"] == 0, response.json()
    return response.json()["img_uid"]


def status_in_db(uid: str) -> str:
    from schema.db import get_engine

    with get_engine().connect() as connection:
        return connection.execute(text("SELECT status FROM images WHERE uid = :u"), {"u": uid}).scalar_one()


def test_lost_broker_messages_are_resent(client, api_key, workers):  # type: ignore[no-untyped-def]
    workers.stop_all()
    uid = upload(client, api_key, FACE_JPEG, "bestface,propoints")
    redis.Redis.from_url(REDIS_URL).flushdb()  # a broker restart without persistence: the message is gone
    assert status_in_db(uid) == "queued"
    workers.start()
    body = wait_for(client, uid, api_key, timeout=180)
    assert body["status"] == "done"


def test_worker_killed_mid_task_loses_nothing(client, api_key, workers):  # type: ignore[no-untyped-def]
    workers.stop_all()  # only the slow worker below may take the job
    slow = workers.start(FACEQUEUE_DEBUG_TASK_DELAY_S="60")
    uid = upload(client, api_key, FACE_JPEG, "classifiers")
    deadline = time.monotonic() + 120
    while status_in_db(uid) != "processing":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    slow.kill()
    assert status_in_db(uid) == "processing"  # the row says processing, but nobody is working on it
    workers.start()
    body = wait_for(client, uid, api_key, timeout=180)
    assert body["status"] == "done"
    assert body["faces"], "the finished job has its faces"


def test_retention_drops_originals_once_processed(client, api_key, workers):  # type: ignore[no-untyped-def]
    from schema.db import get_engine
    from tests.integration.helpers import tiny_png

    workers.stop_all()
    dropping = workers.start(FACEQUEUE_KEEP_ORIGINALS="false")
    try:
        uid = upload(client, api_key, tiny_png() + b"retention")
        assert wait_for(client, uid, api_key)["status"] == "done"
        with get_engine().connect() as connection:
            store, data = connection.execute(
                text(
                    "SELECT b.store, b.data FROM blobs b JOIN images i ON i.sha256 = b.sha256 WHERE i.uid = :u"
                ),
                {"u": uid},
            ).one()
        assert (store, data) == ("dropped", None), "the bytes are gone, the checksum row stays"
        info = client.post("/v1/GetImageInfo", json={"api_key": api_key, "img_uid": uid}).json()
        assert info["int_response"] == 0 and info["checksum"]
    finally:
        dropping.stop()
