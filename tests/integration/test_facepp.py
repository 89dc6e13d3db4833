"""Face++ v3 drop-in (/facepp/v3/...) on the live service: the reference's curl example (multipart
detect with 83 points and gender,age), the other request forms, FaceSets, compare/search on the free
photos, token expiry, and every error message of the reference provoked once."""

from __future__ import annotations

import base64
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import update

from api.vendors import facepp
from facequeue.settings import get_settings
from schema.db import session_scope
from schema.erase import purge_expired_tokens
from schema.tables import Image
from tests.integration.conftest import make_key
from tests.integration.helpers import LocalServer
from tests.photos import astronaut, cat, encode, group, hopper
from workers.pipeline.landmark_sets import FACEPP83, FACEPP106

V3 = "/facepp/v3"


@pytest.fixture(scope="module")
def key(database: str) -> dict[str, str]:
    return {"api_key": make_key("facepp-client"), "api_secret": "any secret"}


def mirrored(rgb: np.ndarray) -> bytes:
    return encode(np.ascontiguousarray(rgb[:, ::-1]))


def detect(client, key: dict, data: bytes, **form: str) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(f"{V3}/detect", data={**key, **form}, files={"image_file": ("a.jpg", data)})
    assert response.status_code == 200, response.text
    return response.json()


def test_reference_curl_example(client, key, worker):  # type: ignore[no-untyped-def]
    # curl -F api_key -F api_secret -F image_file=@image_file.jpg -F return_landmark=1
    #      -F return_attributes=gender,age
    data = encode(astronaut())
    body = detect(client, key, data, return_landmark="1", return_attributes="gender,age")
    assert set(body) == {"request_id", "time_used", "image_id", "faces"}
    assert isinstance(body["time_used"], int) and "," in body["request_id"]
    (face,) = body["faces"]
    assert set(face) == {"face_token", "face_rectangle", "landmark", "attributes"}
    assert set(face["landmark"]) == {name for name, _ in FACEPP83}
    assert face["attributes"]["gender"] == {"value": "Female"}
    assert 25 <= face["attributes"]["age"]["value"] <= 60
    assert set(face["attributes"]) == {"gender", "age"}
    # Values are the native job's: same box, same age.
    media = client.get(f"/v2/media/{body['image_id']}", headers={"X-API-Key": key["api_key"]}).json()
    (native_face,) = media["faces"]
    rect = face["face_rectangle"]
    assert abs(rect["left"] + rect["width"] / 2 - native_face["x"]) <= 1
    tags = {t["name"]: t for t in native_face["tags"]}
    assert face["attributes"]["age"]["value"] == round(float(tags["age"]["value"]))
    lm = face["landmark"]
    assert lm["left_eye_pupil"]["x"] < lm["nose_tip"]["x"] < lm["right_eye_pupil"]["x"]
    assert lm["left_eye_pupil"]["y"] < lm["nose_tip"]["y"] < lm["mouth_upper_lip_top"]["y"]
    assert rect["left"] <= lm["nose_tip"]["x"] <= rect["left"] + rect["width"]
    # A new detect of the same image: new face_token (Face++: "a different face_token" every time).
    again = detect(client, key, data)
    assert again["faces"][0]["face_token"] != face["face_token"]
    assert "landmark" not in again["faces"][0] and "attributes" not in again["faces"][0]


def test_106_points_all_attributes_and_precedence(client, key, worker):  # type: ignore[no-untyped-def]
    data = encode(hopper())
    server = LocalServer(b"")
    try:  # image_file wins over image_url (whose URL would fail); image_base64 over image_url.
        everything = ",".join(facepp.ATTRIBUTES)
        body = client.post(
            f"{V3}/detect",
            data={
                **key,
                "image_url": server.url("/missing"),
                "return_landmark": "2",
                "return_attributes": everything,
            },
            files={"image_file": ("a.jpg", data)},
        ).json()
        b64 = client.post(
            f"{V3}/detect",
            data={
                **key,
                "image_url": server.url("/missing"),
                "image_base64": base64.b64encode(data).decode(),
            },
        ).json()
    finally:
        server.close()
    (face,) = body["faces"]
    assert len(b64["faces"]) == 1
    assert set(face["landmark"]) == {name for name, _ in FACEPP106} and len(face["landmark"]) == 106
    attrs = face["attributes"]
    media = client.get(f"/v2/media/{body['image_id']}", headers={"X-API-Key": key["api_key"]}).json()
    native_tags = {t["name"]: t for t in media["faces"][0]["tags"]}
    assert attrs["gender"] == {"value": native_tags["gender"]["value"].capitalize()}  # the model's answer
    assert attrs["age"]["value"] == round(float(native_tags["age"]["value"]))
    assert 0 <= attrs["smile"]["value"] <= 100 and attrs["smile"]["threshold"] == 50
    assert set(attrs["headpose"]) == {"pitch_angle", "roll_angle", "yaw_angle"}
    assert abs(attrs["headpose"]["yaw_angle"]) < 30
    # Never invented: no model backs these.
    for absent in ("blur", "eyestatus", "beauty", "mouthstatus", "eyegaze", "skinstatus", "glass"):
        assert absent not in attrs
    tags = set(native_tags)
    if "emotion happy" in tags:  # per-class probabilities (when this build reports them)
        assert set(attrs["emotion"]) == set(facepp.EMOTIONS)
        assert abs(sum(attrs["emotion"].values()) - 100) < 0.5
    else:
        assert "emotion" not in attrs
    assert ("facequality" in attrs) == ("quality_for_recognition" in tags)
    if "facequality" in attrs:  # recognition usefulness x 100, threshold = its calibrated "medium" level
        quality = native_tags["quality_for_recognition"]["confidence"]
        assert attrs["facequality"]["value"] == round(quality * 100, 3)
        assert 0 < attrs["facequality"]["threshold"] < 100


def test_url_form_group_calculate_all_and_face_rectangle(client, key, worker):  # type: ignore[no-untyped-def]
    server = LocalServer(encode(group()))
    try:  # application/x-www-form-urlencoded with image_url
        body = client.post(
            f"{V3}/detect", data={**key, "image_url": server.url("/image.jpg"), "return_attributes": "age"}
        ).json()
    finally:
        server.close()
    assert len(body["faces"]) == 2 and all("attributes" in f for f in body["faces"])
    areas = [f["face_rectangle"]["width"] * f["face_rectangle"]["height"] for f in body["faces"]]
    assert areas == sorted(areas, reverse=True)
    right = max(body["faces"], key=lambda f: f["face_rectangle"]["left"])["face_rectangle"]
    rect = f"{right['top']},{right['left']},{right['width']},{right['height'] + 4}"
    only = detect(client, key, encode(group()), face_rectangle=rect, calculate_all="1")
    (face,) = only["faces"]
    assert face["face_rectangle"] == {**right, "height": right["height"] + 4}  # "the same as you passed"


def test_facesets_search_compare_and_expiry(client, key, worker):  # type: ignore[no-untyped-def]
    def post(path: str, **form: str) -> dict:
        response = client.post(f"{V3}/{path}", data={**key, **form})
        assert response.status_code == 200, (path, response.text)
        return response.json()

    grace = detect(client, key, encode(hopper()))["faces"][0]["face_token"]
    eileen = detect(client, key, encode(astronaut()))["faces"][0]["face_token"]
    created = post(
        "faceset/create",
        outer_id="staff-1",
        display_name="Staff",
        user_data="floor 3",
        tags="staff,pilots",
        face_tokens=f"{grace},{'0' * 32}",
    )
    token = created["faceset_token"]
    assert created["face_added"] == 1 and created["face_count"] == 1
    assert created["failure_detail"] == [{"reason": "INVALID_FACE_TOKEN", "face_token": "0" * 32}]
    assert post("faceset/addface", outer_id="staff-1", face_tokens=eileen)["face_count"] == 2
    assert post("face/setuserid", face_token=grace, user_id="grace")["user_id"] == "grace"
    detail = post("faceset/getdetail", faceset_token=token)
    assert detail["outer_id"] == "staff-1" and detail["display_name"] == "Staff"
    assert detail["user_data"] == "floor 3" and detail["tags"] == "staff,pilots"
    assert set(detail["face_tokens"]) == {grace, eileen} and detail["face_count"] == 2
    listed = post("faceset/getfacesets", tags="pilots")["facesets"]
    assert [s["faceset_token"] for s in listed] == [token]
    face_detail = post("face/getdetail", face_token=grace)
    assert face_detail["user_id"] == "grace" and face_detail["facesets"][0]["faceset_token"] == token

    # search: a mirrored Grace Hopper finds Grace first, with a confidence above the 1e-3 threshold.
    found = client.post(
        f"{V3}/search",
        data={**key, "outer_id": "staff-1", "return_result_count": "2"},
        files={"image_file": ("m.jpg", mirrored(hopper()))},
    ).json()
    assert set(found["thresholds"]) == {"1e-3", "1e-4", "1e-5"}
    assert found["thresholds"]["1e-3"] <= found["thresholds"]["1e-4"] <= found["thresholds"]["1e-5"]
    assert [r["face_token"] for r in found["results"]] == [grace, eileen]
    assert found["results"][0]["user_id"] == "grace"
    assert found["results"][0]["confidence"] > found["thresholds"]["1e-3"] > found["results"][1]["confidence"]
    assert len(found["faces"]) == 1 and found["image_id"]

    # compare: tokens or images; same person high, different persons low.
    same = client.post(
        f"{V3}/compare",
        data={**key, "face_token1": grace},
        files={"image_file2": ("m.jpg", mirrored(hopper()))},
    ).json()
    other = post("compare", face_token1=grace, face_token2=eileen)
    assert same["confidence"] > same["thresholds"]["1e-5"] and "faces2" in same and "faces1" not in same
    assert other["confidence"] < other["thresholds"]["1e-3"]

    # analyze: stored attributes for tokens; update; removeface; delete with check_empty.
    analysed = post("face/analyze", face_tokens=f"{grace},{eileen}", return_attributes="gender")
    assert [f["face_token"] for f in analysed["faces"]] == [grace, eileen]
    assert analysed["faces"][1]["attributes"] == {"gender": {"value": "Female"}}
    assert post("faceset/update", faceset_token=token, new_outer_id="staff-2")["outer_id"] == "staff-2"
    removed = post("faceset/removeface", outer_id="staff-2", face_tokens=eileen)
    assert removed["face_removed"] == 1 and removed["face_count"] == 1

    # Expiry: 72 h after its detect a token outside any FaceSet is gone; one in a FaceSet stays.
    images = {t: post("face/getdetail", face_token=t)["image_id"] for t in (grace, eileen)}
    with session_scope() as session:
        session.execute(
            update(Image)
            .where(Image.uid.in_(list(images.values())))
            .values(created_at=Image.created_at - timedelta(hours=73))
        )
        session.commit()
    assert post("face/getdetail", face_token=grace)["face_token"] == grace
    expired = client.post(f"{V3}/face/getdetail", data={**key, "face_token": eileen})
    assert expired.status_code == 400 and expired.json()["error_message"] == "INVALID_FACE_TOKEN"
    # The reaper's purge erases what the expired token pointed at (face, vectors, image, bytes).
    headers = {"X-API-Key": key["api_key"]}
    with session_scope() as session:
        assert purge_expired_tokens(session, get_settings()) == 1
    assert client.get(f"/v2/media/{images[eileen]}", headers=headers).status_code == 404
    assert client.get(f"/v2/media/{images[grace]}", headers=headers).status_code == 200

    not_empty = client.post(f"{V3}/faceset/delete", data={**key, "faceset_token": token})
    assert not_empty.status_code == 400 and not_empty.json()["error_message"] == "FACESET_NOT_EMPTY"
    assert post("faceset/delete", faceset_token=token, check_empty="0")["faceset_token"] == token
    assert post("faceset/getfacesets")["facesets"] == []
    # Out of its FaceSet, Grace's 73-hour-old token has expired too, and the next purge erases it.
    gone = client.post(f"{V3}/face/getdetail", data={**key, "face_token": grace})
    assert gone.json()["error_message"] == "INVALID_FACE_TOKEN"
    with session_scope() as session:
        assert purge_expired_tokens(session, get_settings()) == 1
    assert client.get(f"/v2/media/{images[grace]}", headers=headers).status_code == 404


def _noise_png(side: int) -> bytes:
    rng = np.random.default_rng(0)
    return encode(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "PNG")


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("no-image", 400, "MISSING_ARGUMENTS: image_url, image_file, image_base64"),
        ("no-secret", 400, "MISSING_ARGUMENTS: api_secret"),
        ("bad-key", 401, "AUTHENTICATION_ERROR"),
        ("bad-landmark", 400, "BAD_ARGUMENTS:return_landmark"),
        ("bad-attribute", 400, "BAD_ARGUMENTS:return_attributes"),
        ("not-an-image", 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT:image_file"),
        ("bad-base64", 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT:image_base64"),
        ("tiny", 400, "INVALID_IMAGE_SIZE:image_file"),
        ("too-large", 400, "IMAGE_FILE_TOO_LARGE:image_file"),
        ("url-404", 400, "INVALID_IMAGE_URL"),
        ("url-slow", 412, "IMAGE_DOWNLOAD_TIMEOUT"),
        ("unknown-api", 404, "API_NOT_FOUND"),
        ("coexist", 400, "COEXISTENCE_ARGUMENTS"),
        ("bad-token", 400, "INVALID_FACE_TOKEN"),
        ("bad-faceset", 400, "INVALID_FACESET_TOKEN"),
        ("bad-outer", 400, "INVALID_OUTER_ID"),
        ("no-face", 400, "NO_FACE_FOUND:image_file1"),
    ],
)
def test_error_messages(client, key, worker, case, status, message):  # type: ignore[no-untyped-def]
    server = LocalServer(encode(astronaut()))
    jpeg = encode(astronaut())
    d = f"{V3}/detect"
    try:
        response = {
            "no-image": lambda: client.post(d, data=key),
            "no-secret": lambda: client.post(d, data={"api_key": key["api_key"]}),
            "bad-key": lambda: client.post(
                d, data={**key, "api_key": "0" * 32}, files={"image_file": ("a", jpeg)}
            ),
            "bad-landmark": lambda: client.post(
                d, data={**key, "return_landmark": "3"}, files={"image_file": ("a", jpeg)}
            ),
            "bad-attribute": lambda: client.post(
                d, data={**key, "return_attributes": "age,ethnicity"}, files={"image_file": ("a", jpeg)}
            ),
            "not-an-image": lambda: client.post(d, data=key, files={"image_file": ("a.pdf", b"%PDF-1.4")}),
            "bad-base64": lambda: client.post(d, data={**key, "image_base64": "not base64!"}),
            "tiny": lambda: client.post(
                d, data=key, files={"image_file": ("a.png", encode(astronaut()[:32, :32], "PNG"))}
            ),
            "too-large": lambda: client.post(d, data=key, files={"image_file": ("a.png", _noise_png(900))}),
            "url-404": lambda: client.post(d, data={**key, "image_url": server.url("/missing")}),
            "url-slow": lambda: client.post(d, data={**key, "image_url": server.url("/slow")}),
            "unknown-api": lambda: client.post(f"{V3}/no/such/api", data=key),
            "coexist": lambda: client.post(
                f"{V3}/faceset/getdetail", data={**key, "faceset_token": "a", "outer_id": "b"}
            ),
            "bad-token": lambda: client.post(f"{V3}/face/getdetail", data={**key, "face_token": "0" * 32}),
            "bad-faceset": lambda: client.post(
                f"{V3}/faceset/getdetail", data={**key, "faceset_token": "nope"}
            ),
            "bad-outer": lambda: client.post(f"{V3}/faceset/delete", data={**key, "outer_id": "nope"}),
            "no-face": lambda: client.post(
                f"{V3}/compare",
                data=key,
                files={"image_file1": ("c.jpg", encode(cat())), "image_file2": ("a.jpg", jpeg)},
            ),
        }[case]()
    finally:
        server.close()
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_message"] == message
    assert set(body) == {"time_used", "error_message", "request_id"}


def test_facesets_exist_empty_and_request_too_large(client, key, worker):  # type: ignore[no-untyped-def]
    first = client.post(f"{V3}/faceset/create", data={**key, "outer_id": "dup"}).json()
    again = client.post(f"{V3}/faceset/create", data={**key, "outer_id": "dup"})
    assert again.status_code == 400 and again.json()["error_message"] == "FACESET_EXIST"
    merged = client.post(f"{V3}/faceset/create", data={**key, "outer_id": "dup", "force_merge": "1"}).json()
    assert merged["faceset_token"] == first["faceset_token"]
    empty = client.post(
        f"{V3}/search", data={**key, "outer_id": "dup"}, files={"image_file": ("a", encode(hopper()))}
    )
    assert empty.status_code == 400 and empty.json()["error_message"] == "EMPTY_FACESET"
    assert client.post(f"{V3}/faceset/delete", data={**key, "outer_id": "dup"}).status_code == 200
    # 413 in plain text, not JSON (the reference says so).
    huge = client.post(
        f"{V3}/detect", data=key, files={"image_file": ("a", b"\0" * (facepp.ENTITY_LIMIT + 1))}
    )
    assert huge.status_code == 413 and huge.text == "Request Entity Too Large"


def test_concurrency_limit_and_internal_error(client, key, worker, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "sync_wait_s", 0.001)  # the wait runs out: the service is busy
    data = mirrored(astronaut())
    busy = client.post(f"{V3}/detect", data=key, files={"image_file": ("a.jpg", data)})
    assert busy.status_code == 403 and busy.json()["error_message"] == "CONCURRENCY_LIMIT_EXCEEDED"

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected fault")

    monkeypatch.setattr(facepp, "create_image_job", broken)
    failed = client.post(f"{V3}/detect", data=key, files={"image_file": ("a.jpg", data)})
    assert failed.status_code == 500 and failed.json()["error_message"] == "INTERNAL_ERROR"
    assert client.get("/health").status_code == 200
