"""Azure Face v1.0 drop-in (/face/v1.0/…) on the live service: the official Python client unchanged, the
reference's own request examples, and every error code the reference lists (plus the person-group ones)."""

from __future__ import annotations

import hashlib
import io
import uuid
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from api.vendors import azure
from facequeue.settings import get_settings
from schema.db import session_scope
from schema.erase import purge_expired_tokens
from schema.tables import Face, Image
from tests.integration.conftest import make_key
from tests.integration.helpers import LocalServer
from tests.photos import astronaut, encode, group, hopper

P = "/face/v1.0"


@pytest.fixture(scope="module")
def key(database: str) -> str:
    return make_key("azure-client")


def headers(key: str, content_type: str = "application/json") -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": key, "Content-Type": content_type}


def test_official_client_unchanged(live_server, key, worker):  # type: ignore[no-untyped-def]
    from azure.cognitiveservices.vision.face import FaceClient
    from azure.cognitiveservices.vision.face.models import APIErrorException, TrainingStatusType
    from msrest.authentication import CognitiveServicesCredentials

    face_client = FaceClient(f"http://{live_server}", CognitiveServicesCredentials(key))

    # detect, with landmarks and attributes
    faces = face_client.face.detect_with_stream(
        io.BytesIO(encode(group())),
        return_face_landmarks=True,
        return_face_attributes=["age", "gender", "headPose", "smile", "emotion", "blur", "exposure", "noise"],
        recognition_model="recognition_02",
        return_recognition_model=True,
    )
    assert len(faces) == 2
    eileen, grace = sorted(faces, key=lambda f: f.face_rectangle.left)
    assert eileen.face_rectangle.left + eileen.face_rectangle.width < 560 <= grace.face_rectangle.left
    assert eileen.recognition_model == "recognition_02"
    for face in faces:
        marks, rect = face.face_landmarks, face.face_rectangle
        assert marks.pupil_left.x < marks.pupil_right.x  # Azure names sides from the image
        assert marks.eye_left_outer.x < marks.eye_left_inner.x < marks.nose_tip.x < marks.eye_right_inner.x
        assert marks.eyebrow_left_outer.y < marks.pupil_left.y < marks.nose_tip.y < marks.under_lip_bottom.y
        assert rect.left <= marks.mouth_left.x < marks.mouth_right.x <= rect.left + rect.width
        attributes = face.face_attributes
        assert attributes.gender.value in ("male", "female") and 20 <= attributes.age <= 90
        assert abs(attributes.head_pose.yaw) < 30 and 0 <= attributes.smile <= 1
        assert (
            attributes.blur.blur_level.value in ("Low", "Medium", "High") and 0 <= attributes.blur.value <= 1
        )
        assert attributes.exposure.exposure_level.value in ("UnderExposure", "GoodExposure", "OverExposure")
        assert attributes.glasses is None and attributes.hair is None  # no model: omitted
    assert eileen.face_attributes.gender.value == "female"
    # person group: create, persons, faces, train, identify, verify
    face_client.person_group.create("friends", name="Friends", user_data="from the test")
    ids, persisted_ids = {}, {}
    for name, photo in (("Eileen", astronaut()), ("Grace", hopper())):
        ids[name] = face_client.person_group_person.create(
            "friends", name=name, user_data=name.lower()
        ).person_id
        persisted = face_client.person_group_person.add_face_from_stream(
            "friends", ids[name], io.BytesIO(encode(photo))
        )
        assert persisted.persisted_face_id
        persisted_ids[name] = persisted.persisted_face_id
    assert face_client.person_group.get_training_status("friends").status == TrainingStatusType.nonstarted
    with pytest.raises(APIErrorException) as not_trained:
        face_client.face.identify([eileen.face_id], person_group_id="friends")
    assert not_trained.value.error.error.code == "PersonGroupNotTrained"
    face_client.person_group.train("friends")
    assert face_client.person_group.get_training_status("friends").status == TrainingStatusType.succeeded
    results = face_client.face.identify([eileen.face_id, grace.face_id], person_group_id="friends")
    by_face = {r.face_id: [c.person_id for c in r.candidates] for r in results}
    assert by_face == {eileen.face_id: [ids["Eileen"]], grace.face_id: [ids["Grace"]]}
    same = face_client.face.verify_face_to_person(eileen.face_id, ids["Eileen"], person_group_id="friends")
    other = face_client.face.verify_face_to_face(eileen.face_id, grace.face_id)
    assert same.is_identical and not other.is_identical and same.confidence > other.confidence
    own = face_client.face.verify_face_to_person(
        persisted_ids["Eileen"], ids["Eileen"], person_group_id="friends"
    )
    assert own.is_identical and own.confidence >= same.confidence
    person = face_client.person_group_person.get("friends", ids["Grace"])
    assert person.name == "Grace" and person.user_data == "grace" and len(person.persisted_face_ids) == 1
    assert face_client.person_group.get("friends").user_data == "from the test"
    with pytest.raises(APIErrorException) as missing:
        face_client.person_group.get("nobody")
    assert (
        missing.value.error.error.code == "PersonGroupNotFound" and missing.value.response.status_code == 404
    )
    assert [g.person_group_id for g in face_client.person_group.list()] == ["friends"]
    # Erasure: a deleted persisted face is no longer found.
    face_client.person_group_person.delete_face("friends", ids["Grace"], person.persisted_face_ids[0])
    (result,) = face_client.face.identify([grace.face_id], person_group_id="friends")
    assert result.candidates == []
    face_client.person_group.delete("friends")
    assert face_client.person_group.list() == []


def test_reference_request_example_and_shape(client, key, worker):  # type: ignore[no-untyped-def]
    # The reference's example, `returnFaceAttributes={string}` literally: Azure's BadArgument.
    query = (
        "returnFaceId=true&returnFaceLandmarks=false&returnFaceAttributes={string}&recognitionModel="
        "recognition_01&returnRecognitionModel=false&detectionModel=detection_01"
    )
    server = LocalServer(encode(hopper()))
    try:
        body = {"url": server.url("/image.jpg")}
        bad = client.post(f"{P}/detect?{query}", json=body, headers=headers(key))
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadArgument"
        response = client.post(
            f"{P}/detect?{query.replace('{string}', 'age,gender,headPose,smile,emotion,exposure')}",
            json=body,
            headers=headers(key),
        )
    finally:
        server.close()
    assert response.status_code == 200, response.text
    (face,) = response.json()
    assert set(face) == {"faceId", "faceRectangle", "faceAttributes"}  # no landmarks, no model asked
    assert set(face["faceRectangle"]) == {"width", "height", "left", "top"}
    attributes = face["faceAttributes"]
    assert {"age", "gender", "headPose", "smile", "exposure"} <= set(attributes)
    assert not {"facialHair", "glasses", "hair", "makeup", "accessories", "occlusion"} & set(attributes)
    assert 0 <= attributes["exposure"]["value"] <= 1
    # All 27 landmarks, octet-stream body; a face list and findsimilars; group.
    data = encode(group())
    found = client.post(
        f"{P}/detect?returnFaceLandmarks=true&returnFaceAttributes=emotion,age",
        content=data,
        headers=headers(key, "application/octet-stream"),
    )
    faces = sorted(found.json(), key=lambda f: f["faceRectangle"]["left"])
    assert [list(f["faceLandmarks"]) for f in faces] == [azure.LANDMARK_NAMES] * 2
    # emotion and qualityForRecognition: present exactly when this build's pipeline measures them
    native = client.get(
        f"/v2/media/hash/{hashlib.sha256(data).hexdigest()}", headers={"X-API-Key": key}
    ).json()
    for entry, native_face in zip(faces, sorted(native["faces"], key=lambda f: f["x"]), strict=True):
        tags = {t["name"]: t for t in native_face["tags"]}
        attributes = entry["faceAttributes"]
        assert attributes["age"] == float(tags["age"]["value"])
        assert ("emotion" in attributes) == ("emotion happy" in tags)
        if "emotion" in attributes:
            assert attributes["emotion"]["happiness"] == tags["emotion happy"]["confidence"]
        assert ("qualityForRecognition" in attributes) == ("quality_for_recognition" in tags)
    assert (
        client.put(f"{P}/facelists/people", json={"name": "People"}, headers=headers(key)).status_code == 200
    )
    added = client.post(
        f"{P}/facelists/people/persistedFaces?userData=eileen",
        content=encode(astronaut()),
        headers=headers(key, "application/octet-stream"),
    ).json()
    similar = client.post(
        f"{P}/findsimilars", json={"faceId": faces[0]["faceId"], "faceListId": "people"}, headers=headers(key)
    ).json()
    assert [s["persistedFaceId"] for s in similar] == [added["persistedFaceId"]]
    listed = client.get(f"{P}/facelists/people", headers=headers(key)).json()
    assert listed["persistedFaces"] == [{"persistedFaceId": added["persistedFaceId"], "userData": "eileen"}]
    grouped = client.post(
        f"{P}/group", json={"faceIds": [f["faceId"] for f in faces] + [face["faceId"]]}, headers=headers(key)
    ).json()
    assert grouped == {"groups": [[faces[1]["faceId"], face["faceId"]]], "messyGroup": [faces[0]["faceId"]]}
    assert client.delete(f"{P}/facelists/people", headers=headers(key)).status_code == 200


def _detect(client, key, query="", **kwargs):  # type: ignore[no-untyped-def]
    return client.post(f"{P}/detect{query}", headers=kwargs.pop("headers", headers(key)), **kwargs)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("json-parse", 400, "BadArgument"),
        ("attributes", 400, "BadArgument"),
        ("recognition-model", 400, "BadArgument"),
        ("detection-model", 400, "BadArgument"),
        ("detection_02-attributes", 400, "BadArgument"),
        ("detection_02-landmarks", 400, "BadArgument"),
        ("url-format", 400, "InvalidURL"),
        ("url-download", 400, "InvalidURL"),
        ("decoding", 400, "InvalidImage"),
        ("too-small", 400, "InvalidImageSize"),
        ("too-big", 400, "InvalidImageSize"),
        ("key", 401, "Unspecified"),
        ("media-type", 415, "BadArgument"),
        ("group-missing", 404, "PersonGroupNotFound"),
        ("person-missing", 404, "PersonNotFound"),
        ("face-missing", 404, "FaceNotFound"),
        ("group-exists", 409, "PersonGroupExists"),
        ("identify-untrained", 400, "PersonGroupNotTrained"),
        ("facelist-missing", 404, "FaceListNotFound"),
    ],
)
def test_error_codes(client, key, worker, case, status, code):  # type: ignore[no-untyped-def]
    server = LocalServer(b"") if case == "url-download" else None  # a server costs 0.5 s to close
    octet = headers(key, "application/octet-stream")
    client.put(f"{P}/persongroups/errors", json={"name": "errors"}, headers=headers(key))
    try:
        response = {
            "json-parse": lambda: _detect(client, key, content=b"{url:"),
            "attributes": lambda: _detect(
                client, key, "?returnFaceAttributes=beauty", json={"url": "http://a/b"}
            ),
            "recognition-model": lambda: _detect(
                client, key, "?recognitionModel=r9", json={"url": "http://a/b"}
            ),
            "detection-model": lambda: _detect(client, key, "?detectionModel=d9", json={"url": "http://a/b"}),
            "detection_02-attributes": lambda: _detect(
                client,
                key,
                "?detectionModel=detection_02&returnFaceAttributes=age",
                json={"url": "http://a/b"},
            ),
            "detection_02-landmarks": lambda: _detect(
                client,
                key,
                "?detectionModel=detection_02&returnFaceLandmarks=true",
                json={"url": "http://a/b"},
            ),
            "url-format": lambda: _detect(client, key, json={"url": "ftp://x/a.jpg"}),
            "url-download": lambda: _detect(client, key, json={"url": server.url("/missing")}),  # type: ignore[union-attr]
            "decoding": lambda: _detect(client, key, content=b"%PDF-1.4" + b"x" * 2000, headers=octet),
            "too-small": lambda: _detect(client, key, content=b"\xff\xd8" * 10, headers=octet),
            "too-big": lambda: _detect(client, key, content=b"\0" * (6 * 1024 * 1024 + 1), headers=octet),
            "key": lambda: _detect(client, "0" * 32, json={"url": "http://a/b"}, headers=headers("0" * 32)),
            "media-type": lambda: _detect(client, key, content=b"x", headers=headers(key, "text/plain")),
            "group-missing": lambda: client.get(f"{P}/persongroups/nope", headers=headers(key)),
            "person-missing": lambda: client.get(
                f"{P}/persongroups/errors/persons/00000000-0000-0000-0000-000000000000", headers=headers(key)
            ),
            "face-missing": lambda: client.post(
                f"{P}/verify",
                json={"faceId1": "00000000-0000-0000-0000-000000000000", "faceId2": "1"},
                headers=headers(key),
            ),
            "group-exists": lambda: client.put(
                f"{P}/persongroups/errors", json={"name": "x"}, headers=headers(key)
            ),
            "identify-untrained": lambda: client.post(
                f"{P}/identify",
                json={"faceIds": [str(uuid.uuid4())], "personGroupId": "errors"},
                headers=headers(key),
            ),
            "facelist-missing": lambda: client.get(f"{P}/facelists/nope", headers=headers(key)),
        }[case]()
    finally:
        if server is not None:
            server.close()
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}


def test_timeout_and_internal_error(client, key, worker, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "sync_wait_s", 0.001)
    data = encode(np.ascontiguousarray(astronaut()[::-1]))
    busy = _detect(client, key, content=data, headers=headers(key, "application/octet-stream"))
    assert busy.status_code == 408 and busy.json()["error"]["code"] == "OperationTimeOut"

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected fault")

    monkeypatch.setattr(azure, "create_image_job", broken)
    failed = _detect(client, key, content=data, headers=headers(key, "application/octet-stream"))
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "InternalServerError"
    assert client.get("/health").status_code == 200


def test_face_ids_are_new_per_call_and_expire_after_24_hours(client, key, worker):  # type: ignore[no-untyped-def]
    data = encode(hopper())
    octet = headers(key, "application/octet-stream")
    first, second = (_detect(client, key, content=data, headers=octet).json()[0]["faceId"] for _ in range(2))
    assert first != second  # a new faceId on every detect, as Azure
    verified = client.post(f"{P}/verify", json={"faceId1": first, "faceId2": second}, headers=headers(key))
    assert verified.json()["isIdentical"] is True
    with session_scope() as session:
        image_uid = session.execute(select(Face.image_uid).where(Face.uid == first)).scalar_one()
        session.execute(
            update(Image)
            .where(Image.uid == image_uid)
            .values(created_at=Image.created_at - timedelta(hours=25))
        )
        session.commit()
    expired = client.post(f"{P}/verify", json={"faceId1": first, "faceId2": second}, headers=headers(key))
    assert expired.status_code == 404 and expired.json()["error"]["code"] == "FaceNotFound"
    # The reaper's purge erases the expired detect (face, vectors, image, bytes); the fresh one stays.
    with session_scope() as session:
        assert purge_expired_tokens(session, get_settings()) == 1
    assert client.get(f"/v2/media/{image_uid}", headers={"X-API-Key": key}).status_code == 404
    fresh = client.post(
        f"{P}/findsimilars", json={"faceId": second, "faceIds": [second]}, headers=headers(key)
    )
    assert fresh.status_code == 200
