"""What a newcomer meets first: every upload option on every route, strict flags, names people have,
read-after-write, clear target errors and v2 wording. Free photos only: runs on any machine."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from schema import answers
from tests.integration.conftest import wait_for
from tests.photos import astronaut, encode, group, hopper

COLLINS = encode(astronaut())
# Another shot of the same face: cropped, smaller, darker, recompressed.
COLLINS_2 = encode(
    np.asarray(
        Image.eval(
            Image.fromarray(astronaut()).crop((40, 10, 470, 440)).resize((320, 320)), lambda v: int(v * 0.85)
        )
    ),
    quality=70,
)
HOPPER = encode(hopper())
GROUP = encode(group())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(client, key: str, data: bytes, **fields):  # type: ignore[no-untyped-def]
    return client.post(
        "/v2/media/file",
        files={"file": ("photo.jpg", data, "image/jpeg")},
        data=fields,
        headers={"X-API-Key": key},
    )


def recognize(client, key: str, faces: list[str], targets: list[str]) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(
        "/v2/recognize", json={"faces_uuids": faces, "targets": targets}, headers={"X-API-Key": key}
    )
    assert response.status_code == 202, response.json()
    return wait_for_recognition(client, key, response.json()["recognize_uuid"])


def wait_for_recognition(client, key: str, uid: str) -> dict:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + 60
    while (body := client.get(f"/v2/recognize/{uid}", headers={"X-API-Key": key}).json())["status"] not in (
        "done",
        "error",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    answers.Recognition.model_validate(body)
    return body


def test_multipart_takes_every_upload_option(client, api_key, worker):  # type: ignore[no-untyped-def]
    enrol = multipart(
        client, api_key, COLLINS, detection_flags="bestface", set_person_id="Eileen Collins@nasa"
    )
    assert enrol.status_code == 202, enrol.json()
    assert (
        wait_for(client, enrol.json()["media_uuid"], api_key)["faces"][0]["person_id"]
        == "Eileen Collins@nasa"
    )

    probe = multipart(
        client,
        api_key,
        COLLINS_2,
        detection_flags="propoints",
        landmark_set="azure27",
        quality_checks="true",
        recognize_targets="all@nasa",
        recognize_parameters="max_results:3",
        original_filename="second shot.jpg",
    )
    assert probe.status_code == 202, probe.json()
    accepted = probe.json()
    result = wait_for(client, accepted["media_uuid"], api_key)
    assert result["original_filename"] == "second shot.jpg"
    assert "quality_checks" in result and "FACE_NOT_FOUND" not in result["quality_checks"]
    assert {"pupilLeft", "pupilRight"} <= {p["name"] for p in result["faces"][0]["points"]}
    recognition = wait_for_recognition(client, api_key, result["recognize_uuid"])
    best = recognition["results"][0]["matches"][0]
    assert best["person_id"] == "Eileen Collins@nasa" and best["is_match"], recognition

    # The same validation as the JSON route.
    bad = multipart(client, api_key, COLLINS, landmark_set="nope")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "INVALID_REQUEST"
    bad_person = multipart(client, api_key, COLLINS, set_person_id="bad!name@nasa")
    assert bad_person.json()["error"]["code"] == "INVALID_PERSON_ID"
    bad_callback = multipart(client, api_key, COLLINS, callback_url="ftp://example.org/x")
    assert bad_callback.json()["error"]["code"] == "URL_INVALID"
    assert "callback_url" in bad_callback.json()["error"]["message"]


def test_detection_flags_do_exactly_what_they_say(client, api_key, worker):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    unknown = client.post(
        "/v2/media", json={"file_base64": b64(GROUP), "detection_flags": "foobar"}, headers=headers
    )
    assert unknown.status_code == 422
    assert "foobar" in unknown.json()["error"]["message"] and "basic" in unknown.json()["error"]["message"]
    v1 = client.post(
        "/v1/UploadNewImage_File",
        json={"api_key": api_key, "imagefile_data": b64(GROUP), "detection_flags": "classifier"},
    ).json()
    assert v1["int_response"] == -4

    def faces(flags: str) -> list[dict]:
        body = {"file_base64": b64(GROUP), "detection_flags": flags}
        uid = client.post("/v2/media", json=body, headers=headers).json()["media_uuid"]
        return wait_for(client, uid, api_key)["faces"]

    best = faces("bestface")  # Betaface's "recognition only, one face, as fast as possible"
    assert len(best) == 1 and best[0]["tags"] == [] and len(best[0]["points"]) == 5
    basic = faces("basic")
    assert len(basic) == 2 and all(f["tags"] == [] and len(f["points"]) == 5 for f in basic)
    default = faces("")
    assert len(default) == 2
    for face in default:
        tags = {t["name"]: t["value"] for t in face["tags"]}
        assert {"age", "gender", "expression"} <= set(tags) and len(face["points"]) > 70
        assert face["angle"] == pytest.approx(float(tags["roll"]), abs=0.051)  # one definition


@pytest.mark.parametrize(
    "person",
    ["Chen Shui-bian@news", "José Ñúñez@mundo", "Seán O'Brien@éire", "李小龍@功夫", "R2_D2@droids.v2"],
)
def test_names_people_have(client, api_key, worker, person):  # type: ignore[no-untyped-def]
    uid = client.post(
        "/v2/media",
        json={"file_base64": b64(HOPPER), "detection_flags": "bestface"},
        headers={"X-API-Key": api_key},
    ).json()["media_uuid"]
    face = wait_for(client, uid, api_key)["faces"][0]["face_uuid"]
    answer = client.post(
        "/v2/person", json={"faces_uuids": [face], "person_id": person}, headers={"X-API-Key": api_key}
    )
    assert answer.status_code == 200, answer.json()
    listed = client.get("/v2/person", params={"person_id": person}, headers={"X-API-Key": api_key}).json()
    assert listed["persons"][0]["person_id"] == person and face in listed["persons"][0]["faces_uuids"]


def test_read_after_write(client, api_key, worker):  # type: ignore[no-untyped-def]
    """Each assignment is committed before its answer: an immediate read always sees it (40 of 40)."""
    headers = {"X-API-Key": api_key}
    uid = client.post(
        "/v2/media", json={"file_base64": b64(GROUP), "detection_flags": "basic"}, headers=headers
    ).json()
    face = wait_for(client, uid["media_uuid"], api_key)["faces"][0]["face_uuid"]
    for i in range(40):
        person = f"p{i % 2}@raw"
        assert (
            client.post(
                "/v2/person", json={"faces_uuids": [face], "person_id": person}, headers=headers
            ).status_code
            == 200
        )
        listed = client.get("/v2/person", params={"person_id": person}, headers=headers).json()["persons"]
        assert face in listed[0]["faces_uuids"], f"read {i} saw the old state"


def test_recognition_targets_are_checked(client, api_key, worker):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    uid = client.post(
        "/v2/media", json={"file_base64": b64(HOPPER), "detection_flags": "bestface"}, headers=headers
    ).json()
    probe = wait_for(client, uid["media_uuid"], api_key)["faces"][0]["face_uuid"]

    def error(targets: list[str]) -> dict:
        response = client.post(
            "/v2/recognize", json={"faces_uuids": [probe], "targets": targets}, headers=headers
        )
        assert response.status_code == 400, response.json()
        return response.json()["error"]

    answers.ErrorEnvelope.model_validate({"error": error(["all@nosuchns"])})
    assert error(["all@nosuchns"]) == {
        "code": "INVALID_TARGET",
        "message": "namespace 'nosuchns' does not exist",
    }
    assert "unknown target face" in error(["00000000-0000-4000-8000-000000000000"])["message"]
    assert "is not a face uid" in error(["no-such-face"])["message"]
    assert error(["nobody@nasa"])["message"] == "person 'nobody@nasa' has no enrolled faces"
    client.post("/v2/person", json={"faces_uuids": [probe], "person_id": "only@emptied"}, headers=headers)
    client.post("/v2/person", json={"faces_uuids": [probe], "person_id": ""}, headers=headers)
    assert error(["all@emptied"])["message"] == "namespace 'emptied' has no enrolled faces"
    # Upload-time targets are checked the same way.
    upload = client.post(
        "/v2/media", json={"file_base64": b64(HOPPER), "recognize_targets": ["all@nosuchns"]}, headers=headers
    )
    assert upload.status_code == 400 and upload.json()["error"]["code"] == "INVALID_TARGET"
    v1 = client.post(
        "/v1/Faces_Recognize", json={"api_key": api_key, "faces_uids": [probe], "targets": ["all@nosuchns"]}
    ).json()
    assert v1["int_response"] == -31


def test_stranger_and_same_person_on_free_photos(client, api_key, worker):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    enrol = client.post(
        "/v2/media",
        json={"file_base64": b64(COLLINS), "detection_flags": "bestface", "set_person_id": "collins@crew"},
        headers=headers,
    ).json()
    wait_for(client, enrol["media_uuid"], api_key)
    faces = {}
    for name, data in (("same", COLLINS_2), ("stranger", HOPPER)):
        uid = client.post(
            "/v2/media", json={"file_base64": b64(data), "detection_flags": "bestface"}, headers=headers
        ).json()
        faces[name] = wait_for(client, uid["media_uuid"], api_key)["faces"][0]["face_uuid"]
    result = recognize(client, api_key, [faces["same"], faces["stranger"]], ["all@crew"])
    same, stranger = (r["matches"][0] for r in result["results"])
    assert same["person_id"] == "collins@crew" and same["is_match"]
    assert not stranger["is_match"] and stranger["confidence"] < same["confidence"]


def test_v2_messages_name_v2_fields(client, api_key):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    bad64 = client.post("/v2/media", json={"file_base64": "%%%"}, headers=headers).json()["error"]
    assert (
        bad64["code"] == "BAD_BASE64"
        and "file_base64" in bad64["message"]
        and "imagefile_data" not in bad64["message"]
    )
    bad_url = client.post("/v2/media", json={"file_uri": "ftp://example.org/a.jpg"}, headers=headers).json()[
        "error"
    ]
    assert bad_url["code"] == "URL_INVALID" and "file_uri" in bad_url["message"]
    v1_url = client.post("/v1/UploadNewImage_Url", json={"api_key": api_key, "image_url": "nope"}).json()
    assert "image_url" in v1_url["string_response"]
    limit = 8 * 1024 * 1024  # FACEQUEUE_MAX_UPLOAD_BYTES in the integration settings
    big = multipart(client, api_key, b"\xff\xd8" + bytes(limit + 10))
    assert big.status_code == 413
    assert (
        f"{limit + 12} bytes" in big.json()["error"]["message"]
        or f"more than {limit}" in big.json()["error"]["message"]
    )


def test_callback_on_an_upload_that_dedupes_onto_an_existing_job(client, api_key, worker):  # type: ignore[no-untyped-def]
    import time

    from tests.integration.helpers import LocalServer

    server = LocalServer(b"")
    try:
        data = encode(astronaut(), quality=83)  # bytes of this test only
        headers = {"X-API-Key": api_key}

        def upload(callback: str | None) -> str:
            body = {"file_base64": b64(data), "detection_flags": "basic", "callback_url": callback}
            return client.post("/v2/media", json=body, headers=headers).json()["media_uuid"]

        def delivered(path: str) -> int:
            return server.paths.count(path)

        first = upload(server.url("/callback?first"))
        wait_for(client, first, api_key)
        deadline = time.monotonic() + 60
        while not delivered("/callback?first") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delivered("/callback?first") == 1
        # The same bytes again, with another callback: the same job, and its result goes there too.
        assert upload(server.url("/callback?second")) == first
        deadline = time.monotonic() + 60
        while not delivered("/callback?second") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert delivered("/callback?second") == 1, server.paths
        assert upload(None) == first and upload(server.url("/callback?second")) == first
        time.sleep(2)
        assert delivered("/callback?first") == 1 and delivered("/callback?second") == 1, server.paths
        assert server.received[-1]["media_uuid"] == first and server.received[-1]["status"] == "done"
    finally:
        server.close()
