"""Upload -> poll -> done through the real api, Postgres, Redis and a Celery worker; and every bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import time

import pytest
from PIL import Image
from sqlalchemy import select

from facequeue.settings import get_settings
from tests.integration.conftest import wait_for
from tests.integration.helpers import FACE_JPEG, LocalServer, tiny_png
from tests.photos import SHARED_MODELS, encode, group
from workers.models.fetch import is_ready


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    local = LocalServer(FACE_JPEG)
    yield local
    local.close()


def v1(client, function: str, key: str | None, **body):  # type: ignore[no-untyped-def]
    if key:
        body["api_key"] = key
    response = client.post(f"/v1/{function}", json=body)
    assert response.status_code == 200
    return response.json()


def test_health(client, worker):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while (response := client.get("/health")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)  # the worker's first heartbeat
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["workers"] >= 1
    assert {k: body[k] for k in ("api", "database", "broker")} == {
        "api": "ok",
        "database": "ok",
        "broker": "ok",
    }
    assert client.get("/health/live").json() == {"api": "ok"}


def test_v1_upload_and_poll(client, api_key, worker):  # type: ignore[no-untyped-def]
    data = FACE_JPEG
    uploaded = v1(
        client, "UploadNewImage_File", api_key, imagefile_data=b64(data), original_filename="collins.jpg"
    )
    assert uploaded["int_response"] == 0
    uid = uploaded["img_uid"]
    deadline = time.monotonic() + 180
    while (info := v1(client, "GetImageInfo", api_key, img_uid=uid))["int_response"] == 1:
        assert info["string_response"] == "Request is in the queue"
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert info["int_response"] == 0, info
    assert info["checksum"] == hashlib.sha256(data).hexdigest()
    assert info["original_filename"] == "collins.jpg"
    assert len(info["faces"]) == 1
    face = info["faces"][0]
    assert {"uid", "x", "y", "width", "height", "angle", "score", "points", "tags"} <= face.keys()
    assert 0.5 < face["score"] <= 1
    # Same result through the Betaface path alias and by checksum.
    by_sum = client.post(
        "/service_json.svc/GetImageFileInfo", json={"api_key": api_key, "img_checksum": info["checksum"]}
    )
    assert by_sum.json()["uid"] == uid


def test_v2_multipart_and_json(client, api_key, worker):  # type: ignore[no-untyped-def]
    data = FACE_JPEG
    headers = {"X-API-Key": api_key}
    multipart = client.post(
        "/v2/media/file",
        files={"file": ("face.jpg", data, "image/jpeg")},
        data={"detection_flags": "bestface"},
        headers=headers,
    )
    assert multipart.status_code == 202
    accepted = multipart.json()
    assert set(accepted) == {"media_uuid", "checksum", "status"}
    assert accepted["status"] in ("queued", "processing", "done")
    body = wait_for(client, accepted["media_uuid"], api_key)
    assert body["status"] == "done" and body["error"] is None
    assert body["original_filename"] == "face.jpg"
    face = body["faces"][0]
    assert {
        "face_uuid",
        "x",
        "y",
        "width",
        "height",
        "angle",
        "detection_score",
        "points",
        "tags",
        "person_id",
    } <= set(face)
    # x, y are the box centre, inside the image.
    assert 0 < face["x"] < body["width"] and 0 < face["y"] < body["height"]

    as_json = client.post(
        "/v2/media", json={"file_base64": b64(data), "detection_flags": "bestface"}, headers=headers
    )
    assert as_json.json()["media_uuid"] == accepted["media_uuid"], "same bytes + flags = same job"
    by_hash = client.get(f"/v2/media/hash/{accepted['checksum']}", headers=headers)
    assert by_hash.json()["media_uuid"] == accepted["media_uuid"]
    with_vectors = client.get(f"/v2/media/{accepted['media_uuid']}?embeddings=true", headers=headers).json()
    assert len(with_vectors["faces"][0]["embedding"]) == 128
    assert with_vectors["faces"][0]["embedding_model"]


def test_v2_several_files_in_one_request(client, api_key, worker):  # type: ignore[no-untyped-def]
    """POST /v2/media/files: one job per file as if each came alone; a bad file does not stop the others."""
    headers = {"X-API-Key": api_key}
    face, other = (
        FACE_JPEG + b"several-files",
        encode(group()) + b"several-files",
    )  # bytes no other test sends
    parts = [
        ("file", ("a.jpg", face, "image/jpeg")),
        ("file", ("b.jpg", other, "image/jpeg")),
        ("file", ("again.jpg", face, "image/jpeg")),
        ("file", ("notes.txt", b"not an image", "text/plain")),
    ]
    answer = client.post("/v2/media/files?wait=120", files=parts, data={"batch": "several"}, headers=headers)
    assert answer.status_code == 200, answer.text  # every accepted job finished within the wait
    body = answer.json()
    assert [entry["index"] for entry in body["accepted"]] == [0, 1, 2]
    assert [(r["index"], r["original_filename"], r["code"]) for r in body["rejected"]] == [
        (3, "notes.txt", "NOT_AN_IMAGE")
    ]
    first, second, again = body["accepted"]
    assert again["media_uuid"] == first["media_uuid"] != second["media_uuid"], "dedupe as for single uploads"
    for entry in (first, second):
        polled = client.get(f"/v2/media/{entry['media_uuid']}", headers=headers).json()
        assert {k: v for k, v in entry.items() if k != "index"} == polled, "each entry is the media answer"
        assert polled["status"] == "done" and polled["batch"] == "several" and polled["faces"]
    assert first["original_filename"] == "a.jpg" and first["checksum"] == hashlib.sha256(face).hexdigest()
    alone = client.post(
        "/v2/media/file", files={"file": ("b.jpg", other)}, data={"batch": "several"}, headers=headers
    )
    assert alone.json()["media_uuid"] == second["media_uuid"], "the same job as a single upload of the file"

    fresh = tiny_png() + b"several-files-queued"
    queued = client.post("/v2/media/files", files=[("file", ("t.png", fresh))], headers=headers)
    assert queued.status_code == 202, "no wait: accepted at once"
    assert set(queued.json()["accepted"][0]) == {"index", "media_uuid", "checksum", "status"}

    too_many = [("file", (f"{i}.png", tiny_png())) for i in range(65)]
    refused = client.post("/v2/media/files", files=too_many, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "INVALID_REQUEST"
    named = client.post(
        "/v2/media/files", files=parts[:1], data={"original_filename": "x.jpg"}, headers=headers
    )
    assert named.status_code == 422 and "each part" in named.json()["error"]["message"]


def test_several_files_each_refused_with_its_own_code(client, api_key, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 4096)
    good = tiny_png() + b"own-codes"
    parts = [
        ("file", ("empty.png", b"")),
        ("file", ("big.png", good + b"x" * 5000)),
        ("file", ("good.png", good)),
    ]
    answer = client.post("/v2/media/files", files=parts, headers={"X-API-Key": api_key})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(0, "EMPTY_IMAGE"), (1, "IMAGE_TOO_LARGE")]
    assert "4096" in body["rejected"][1]["message"]
    assert [entry["index"] for entry in body["accepted"]] == [2], "the good file is queued all the same"
    polled = client.get(f"/v2/media/{body['accepted'][0]['media_uuid']}", headers={"X-API-Key": api_key})
    assert polled.status_code == 200, "still serving"


def test_several_files_racing_a_single_upload_of_one_of_them(client, api_key, monkeypatch):  # type: ignore[no-untyped-def]
    """A single upload of the same bytes commits between the group's dedupe query and its commit: the
    group's commit fails on the unique key, and the group is redone one by one, ending on that job."""
    import api.uploads
    from api.deps import key_sha256
    from api.limits import QueueLimiter
    from schema.db import session_scope
    from schema.tables import ApiKey, Tenant

    first, second = tiny_png() + b"race-first", tiny_png() + b"race-second"
    admit = QueueLimiter.admit
    raced: list[str] = []

    def admit_after_a_racing_upload(self, session, tenant_id, queue, settings, count=1):  # type: ignore[no-untyped-def]
        if not raced:  # the racing request, in its own transaction, gets there first
            raced.append("")  # (its own admission comes through here too)
            with session_scope() as other:
                tenant = other.execute(
                    select(Tenant).join(ApiKey).where(ApiKey.key_sha256 == key_sha256(api_key))
                ).scalar_one()
                raced[0] = api.uploads.create_image_job(other, get_settings(), tenant, data=second).uid
        return admit(self, session, tenant_id, queue, settings, count)

    monkeypatch.setattr(QueueLimiter, "admit", admit_after_a_racing_upload)
    files = [("file", ("a.png", first)), ("file", ("b.png", second))]
    answer = client.post("/v2/media/files", files=files, headers={"X-API-Key": api_key})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()["accepted"]
    assert [entry["index"] for entry in accepted] == [0, 1]
    assert accepted[1]["media_uuid"] == raced[0], "the racing upload's job, not a second one"
    again = client.post("/v2/media/file", files={"file": ("a.png", first)}, headers={"X-API-Key": api_key})
    assert again.json()["media_uuid"] == accepted[0]["media_uuid"], "the other file was stored once"


def test_dedupe_is_per_bytes_flags_and_tenant(client, api_key, other_key):  # type: ignore[no-untyped-def]
    data = tiny_png()
    first = v1(client, "UploadNewImage_File", api_key, imagefile_data=b64(data))["img_uid"]
    again = v1(client, "UploadNewImage_File", api_key, imagefile_data=b64(data), detection_flags="")[
        "img_uid"
    ]
    other_flags = v1(
        client, "UploadNewImage_File", api_key, imagefile_data=b64(data), detection_flags="bestface"
    )
    other_tenant = v1(client, "UploadNewImage_File", other_key, imagefile_data=b64(data))["img_uid"]
    assert first == again
    assert other_flags["img_uid"] != first
    assert other_tenant != first


def test_tenant_isolation(client, api_key, other_key):  # type: ignore[no-untyped-def]
    data = tiny_png() + b"tenant-a-only"
    uid = v1(client, "UploadNewImage_File", api_key, imagefile_data=b64(data))["img_uid"]
    assert client.get(f"/v2/media/{uid}", headers={"X-API-Key": other_key}).status_code == 404
    assert v1(client, "GetImageInfo", other_key, img_uid=uid)["int_response"] == -5
    checksum = hashlib.sha256(data).hexdigest()
    assert client.get(f"/v2/media/hash/{checksum}", headers={"X-API-Key": other_key}).status_code == 404
    assert client.get(f"/v2/media/hash/{checksum}", headers={"X-API-Key": api_key}).status_code == 200


def test_admin_usage(client, api_key):  # type: ignore[no-untyped-def]
    from tests.integration.conftest import make_key

    assert client.get("/v2/admin/usage", headers={"X-API-Key": api_key}).status_code == 403
    admin = make_key("operators", admin=True)
    usage = client.get("/v2/admin/usage", headers={"X-API-Key": admin}).json()
    assert sum(usage["tenants"]["tenant-a"]["images"].values()) >= 1


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, "PNG")  # 64 Mpx in a few kB
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    data = FACE_JPEG
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("body", "code", "v2_status"),
    [
        ({"imagefile_data": ""}, -10, 400),
        ({"imagefile_data": "@@not base64@@"}, -11, 400),
        ({"imagefile_data": b64(b"%PDF-1.4 a document, not an image")}, -13, 415),
        ({"imagefile_data": b64(b"hello world")}, -13, 415),
        ({"imagefile_data": b64(bomb_png())}, -15, 413),
        ({"imagefile_data": b64(b"\xff\xd8" + b"\0" * (9 * 1024 * 1024))}, -12, 413),
    ],
    ids=["empty", "bad-base64", "pdf", "text", "decompression-bomb", "too-many-bytes"],
)
def test_bad_uploads_refused_at_once(client, api_key, body, code, v2_status):  # type: ignore[no-untyped-def]
    assert v1(client, "UploadNewImage_File", api_key, **body)["int_response"] == code
    response = client.post(
        "/v2/media", json={"file_base64": body["imagefile_data"] or " "}, headers={"X-API-Key": api_key}
    )
    assert response.status_code == v2_status
    assert response.json()["error"]["code"]


def test_request_errors(client, api_key):  # type: ignore[no-untyped-def]
    assert (
        v1(client, "GetImageInfo", api_key, img_uid="00000000-0000-0000-0000-000000000000")["int_response"]
        == -5
    )
    assert v1(client, "GetImageInfo", api_key, img_uid="not-a-uid")["int_response"] == -5
    assert v1(client, "GetImageInfo", None, img_uid="x")["int_response"] == -2
    assert v1(client, "GetImageInfo", "wrong-key", img_uid="x")["int_response"] == -2
    malformed = client.post(
        "/v1/GetImageInfo", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 200 and malformed.json()["int_response"] == -4
    v2_malformed = client.post(
        "/v2/media", content=b"{not json", headers={"X-API-Key": api_key, "Content-Type": "application/json"}
    )
    assert v2_malformed.status_code == 422 and v2_malformed.json()["error"]["code"] == "INVALID_REQUEST"
    assert client.get("/v2/media/nope", headers={"X-API-Key": api_key}).status_code == 404
    assert client.get("/v2/media/nope").status_code == 401
    both = client.post(
        "/v2/media",
        json={"file_uri": "http://x.org/a.jpg", "file_base64": "AAAA"},
        headers={"X-API-Key": api_key},
    )
    assert both.status_code == 422


def test_corrupt_image_fails_the_job_not_the_worker(client, api_key, worker):  # type: ignore[no-untyped-def]
    uid = v1(client, "UploadNewImage_File", api_key, imagefile_data=b64(truncated_jpeg()))["img_uid"]
    body = wait_for(client, uid, api_key)
    assert body["status"] == "error" and body["error"]["code"] == "IMAGE_CORRUPT"
    assert v1(client, "GetImageInfo", api_key, img_uid=uid)["int_response"] == -14
    # The worker still serves.
    good = v1(client, "UploadNewImage_File", api_key, imagefile_data=b64(tiny_png() + b"after-corrupt"))[
        "img_uid"
    ]
    assert wait_for(client, good, api_key)["status"] == "done"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/slow", "URL_TIMEOUT"),
        ("/huge", "URL_TOO_LARGE"),
        ("/text", "NOT_AN_IMAGE"),
        ("/missing", "URL_HTTP_ERROR"),
        ("/redirect-private", "URL_FORBIDDEN"),
    ],
)
def test_bad_urls_fail_the_job(client, api_key, worker, server, path, code):  # type: ignore[no-untyped-def]
    response = client.post("/v2/media", json={"file_uri": server.url(path)}, headers={"X-API-Key": api_key})
    assert response.status_code == 202
    body = wait_for(client, response.json()["media_uuid"], api_key)
    assert body["status"] == "error"
    assert body["error"]["code"] == code


def test_unreachable_url(client, api_key, worker):  # type: ignore[no-untyped-def]
    response = client.post(
        "/v2/media", json={"file_uri": "http://127.0.0.2:9/none.jpg"}, headers={"X-API-Key": api_key}
    )
    body = wait_for(client, response.json()["media_uuid"], api_key)
    assert body["error"]["code"] == "URL_UNREACHABLE"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.jpg",
        "http://10.1.2.3/a.jpg",
        "http://169.254.169.254/latest",
        "http://localhost/a.jpg",
        "http://[::1]/a.jpg",
        "ftp://example.org/a.jpg",
        "not a url",
    ],
)
def test_private_and_invalid_urls_refused_at_once(client, api_key, url):  # type: ignore[no-untyped-def]
    answer = v1(client, "UploadNewImage_Url", api_key, image_url=url)
    assert answer["int_response"] in (-20, -21)


def test_url_upload_and_callback(client, api_key, worker, server):  # type: ignore[no-untyped-def]
    body = {
        "file_uri": server.url("/image.jpg"),
        "callback_url": server.url("/callback"),
        "detection_flags": "bestface",
    }
    uid = client.post("/v2/media", json=body, headers={"X-API-Key": api_key}).json()["media_uuid"]
    result = wait_for(client, uid, api_key)
    assert result["status"] == "done" and len(result["faces"]) == 1
    assert result["checksum"] == hashlib.sha256(FACE_JPEG).hexdigest()
    deadline = time.monotonic() + 30
    while not any(r.get("media_uuid") == uid for r in server.received):
        assert time.monotonic() < deadline, "callback never arrived"
        time.sleep(0.2)
    delivered = next(r for r in server.received if r.get("media_uuid") == uid)
    assert (
        delivered["status"] == "done"
        and delivered["faces"][0]["face_uuid"] == result["faces"][0]["face_uuid"]
    )


def test_failing_callback_is_recorded_and_job_still_done(client, api_key, worker, server):  # type: ignore[no-untyped-def]
    data = tiny_png() + b"callback-fail"
    body = {"file_base64": b64(data), "callback_url": server.url("/callback-fail")}
    uid = client.post("/v2/media", json=body, headers={"X-API-Key": api_key}).json()["media_uuid"]
    assert wait_for(client, uid, api_key)["status"] == "done"
    from schema.db import session_scope
    from schema.tables import Image as ImageRow

    deadline = time.monotonic() + 30
    while True:
        with session_scope() as session:
            row = session.get(ImageRow, uid)
            if row.callback_attempts >= 2:
                assert row.callback_status == "pending" and "500" in row.callback_error
                break
        assert time.monotonic() < deadline, "callback was not retried"
        time.sleep(0.3)


def test_analysis_options(client, api_key, worker):  # type: ignore[no-untyped-def]
    """Dense points in another named set, the liveness tag and the liveness API's quality checks."""
    headers = {"X-API-Key": api_key}
    body = {
        "file_base64": b64(encode(group())),
        "detection_flags": "propoints,liveness",
        "landmark_set": "azure27",
        "quality_checks": True,
    }
    uid = client.post("/v2/media", json=body, headers=headers).json()["media_uuid"]
    result = wait_for(client, uid, api_key)
    liveness_available = SHARED_MODELS.is_dir() or is_ready("minifasnet_v2", get_settings())
    if not liveness_available:  # liveness is optional: no package on the index carries MiniFASNet
        assert result["status"] == "error" and result["error"]["code"] == "NOT_AVAILABLE", result
        assert "2.7_80x80_MiniFASNetV2.onnx" in result["error"]["message"]
        assert "FACEQUEUE_MODEL_MIRROR" in result["error"]["message"]
        body["detection_flags"] = "propoints"
        uid = client.post("/v2/media", json=body, headers=headers).json()["media_uuid"]
        result = wait_for(client, uid, api_key)
    assert result["status"] == "done" and len(result["faces"]) == 2
    assert "TOO_MANY_FACES" in result["quality_checks"]
    face = result["faces"][0]
    names = {p["name"] for p in face["points"]}
    assert {"pupilLeft", "pupilRight", "noseTip"} <= names
    if liveness_available:
        liveness = next(t for t in face["tags"] if t["name"] == "liveness")
        assert liveness["value"] in ("real", "spoof") and 0 <= liveness["confidence"] <= 1

    single = {
        "file_base64": b64(FACE_JPEG),
        "quality_checks": True,
        "detection_flags": "bestface",
    }
    checked = wait_for(
        client, client.post("/v2/media", json=single, headers=headers).json()["media_uuid"], api_key
    )
    assert (
        "TOO_MANY_FACES" not in checked["quality_checks"]
        and "FACE_NOT_FOUND" not in checked["quality_checks"]
    )

    bad = client.post("/v2/media", json={**single, "landmark_set": "nope"}, headers=headers)
    assert bad.status_code == 422


def test_nsfw_flag_and_detection_mode(client, api_key, worker):  # type: ignore[no-untyped-def]
    """`nsfw` adds the image-level score (a safe photo scores low); `detection_mode` is an upload option,
    checked at upload."""
    headers = {"X-API-Key": api_key}
    accepted = client.post(
        "/v2/media/file",
        files={"file": ("group.jpg", encode(group()), "image/jpeg")},
        data={"detection_flags": "basic,nsfw", "detection_mode": "accurate"},
        headers=headers,
    )
    assert accepted.status_code == 202, accepted.json()
    body = wait_for(client, accepted.json()["media_uuid"], api_key)
    assert body["status"] == "done", body["error"]
    assert body["nsfw"]["label"] == "sfw" and 0 <= body["nsfw"]["score"] < 0.2
    assert len(body["faces"]) == 2
    bad = client.post(
        "/v2/media",
        json={"file_base64": b64(encode(group())), "detection_mode": "thorough"},
        headers=headers,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_REQUEST"
