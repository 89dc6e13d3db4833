"""Erasure requests: deleting media, faces, persons and namespaces removes bytes, vectors and index
entries, verified by a recognition that no longer finds the face."""

from __future__ import annotations

import base64
import hashlib

from sqlalchemy import func, select

from schema.db import session_scope
from schema.tables import Blob, Embedding, Face, FaceTombstone
from tests.integration.conftest import wait_for
from tests.integration.test_first_contact import COLLINS_2, HOPPER, recognize
from tests.photos import astronaut, encode

ERASED = encode(astronaut(), quality=87)  # bytes no other test uploads


def upload(client, key: str, data: bytes, **options) -> dict:  # type: ignore[no-untyped-def]
    body = {"file_base64": base64.b64encode(data).decode(), "detection_flags": "bestface", **options}
    response = client.post("/v2/media", json=body, headers={"X-API-Key": key})
    assert response.status_code == 202, response.json()
    return wait_for(client, response.json()["media_uuid"], key)


def count(model, *where) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_erasure_removes_bytes_vectors_and_index_entries(client, other_key, worker):  # type: ignore[no-untyped-def]
    key, headers = other_key, {"X-API-Key": other_key}  # a tenant of its own: counts are not shared
    collins = upload(client, key, ERASED, set_person_id="collins@erase")
    upload(client, key, HOPPER, set_person_id="hopper@erase")
    probe = upload(client, key, COLLINS_2)["faces"][0]["face_uuid"]
    before = recognize(client, key, [probe], ["all@erase"])["results"][0]["matches"]
    assert before[0]["person_id"] == "collins@erase" and before[0]["is_match"]

    namespaces = client.get("/v2/namespaces", headers=headers).json()["namespaces"]
    assert {"namespace": "erase", "persons": 2, "faces": 2} in namespaces
    listed = client.get("/v2/media", params={"limit": 2}, headers=headers).json()
    assert len(listed["media"]) == 2 and listed["next_cursor"]
    rest = client.get("/v2/media", params={"cursor": listed["next_cursor"]}, headers=headers).json()
    assert {m["media_uuid"] for m in listed["media"]} & {m["media_uuid"] for m in rest["media"]} == set()
    assert collins["media_uuid"] in {m["media_uuid"] for m in listed["media"] + rest["media"]}

    face = collins["faces"][0]["face_uuid"]
    sha = hashlib.sha256(ERASED).hexdigest()
    erased = client.delete(f"/v2/media/{collins['media_uuid']}", headers=headers)
    assert erased.json() == {"deleted": collins["media_uuid"], "faces_deleted": 1}
    assert client.get(f"/v2/media/{collins['media_uuid']}", headers=headers).status_code == 404
    assert count(Face, Face.uid == face) == count(Embedding, Embedding.face_uid == face) == 0
    assert count(FaceTombstone) >= 1
    assert count(Blob, Blob.sha256 == sha) == 0, "no other image uses these bytes: they are gone"
    after = recognize(client, key, [probe], ["all@erase"])["results"][0]["matches"]
    assert [m["person_id"] for m in after] == ["hopper@erase"] and not after[0]["is_match"]

    # A person with its faces, then the (now empty) namespace.
    gone = client.delete(
        "/v2/person", params={"person_id": "hopper@erase", "delete_faces": "true"}, headers=headers
    )
    assert gone.json() == {"deleted": "hopper@erase", "persons_deleted": 1, "faces_deleted": 1}
    # Erasing an image leaves its person, now without faces, until the person or namespace goes too.
    persons = client.get("/v2/person", params={"person_id": "all@erase"}, headers=headers).json()["persons"]
    assert persons == [{"person_id": "collins@erase", "faces_uuids": []}]
    assert client.delete("/v2/namespaces", params={"namespace": "erase"}, headers=headers).status_code == 200
    assert "erase" not in {
        n["namespace"] for n in client.get("/v2/namespaces", headers=headers).json()["namespaces"]
    }
    missing = client.delete("/v2/namespaces", params={"namespace": "erase"}, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    for method, route in (("DELETE", "/v2/namespaces"), ("GET", "/v2/faces")):  # as in person ids
        bad = client.request(method, route, params={"namespace": "a@b"}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("bad namespace 'a@b'")


def test_deleting_one_face_and_unassigning_a_person(client, api_key, worker):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    media = upload(client, api_key, HOPPER, set_person_id="grace@navy", detection_flags="basic")
    face = media["faces"][0]["face_uuid"]
    kept = client.delete("/v2/person", params={"person_id": "grace@navy"}, headers=headers).json()
    assert kept == {"deleted": "grace@navy", "persons_deleted": 1, "faces_unassigned": 1}
    assert wait_for(client, media["media_uuid"], api_key)["faces"][0]["person_id"] is None
    assert client.delete(f"/v2/face/{face}", headers=headers).json() == {"deleted": face, "faces_deleted": 1}
    assert wait_for(client, media["media_uuid"], api_key)["faces"] == []
    assert client.delete(f"/v2/face/{face}", headers=headers).status_code == 404
