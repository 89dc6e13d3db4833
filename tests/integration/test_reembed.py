"""`facequeue reembed` through the real CLI, Postgres, Redis and a Celery worker consuming the batch queue.

A gallery enrolled before SFace is simulated by deleting the SFace vectors of enrolled faces; one of the
images also lost its original (retention). reembed must restore the vectors from the stored originals
(the same vectors: same image, same stored points), name the face it cannot re-embed, and recognition
must compare only vectors of the profile's model: the stranded face answers FACE_HAS_NO_EMBEDDING and
is absent from the namespace search, the others are found.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import numpy as np
from sqlalchemy import delete, select

from tests.integration.conftest import ROOT, wait_for
from tests.photos import astronaut, encode, group, hopper

SFACE, DLIB = "sface-2021dec", "dlib-resnet-v1"
NS = "reembed"


def upload(client, key: str, rgb: np.ndarray, **options) -> str:  # type: ignore[no-untyped-def]
    body = {"file_base64": base64.b64encode(encode(rgb)).decode(), "detection_flags": "bestface", **options}
    response = client.post("/v2/media", json=body, headers={"X-API-Key": key})
    assert response.status_code == 202, response.json()
    return response.json()["media_uuid"]


def recognize(client, key: str, faces: list[str], targets: list[str]) -> dict:  # type: ignore[no-untyped-def]
    response = client.post(
        "/v2/recognize", json={"faces_uuids": faces, "targets": targets}, headers={"X-API-Key": key}
    )
    assert response.status_code == 202, response.json()
    uid = response.json()["recognize_uuid"]
    deadline = time.monotonic() + 60
    while (body := client.get(f"/v2/recognize/{uid}", headers={"X-API-Key": key}).json())["status"] not in (
        "done",
        "error",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return body


def vectors(face_uids: list[str], model: str) -> dict[str, np.ndarray]:
    from schema.db import session_scope
    from schema.tables import Embedding

    with session_scope() as session:
        rows = session.execute(
            select(Embedding.face_uid, Embedding.vector).where(
                Embedding.face_uid.in_(face_uids), Embedding.model_id == model
            )
        ).all()
    return {uid: np.frombuffer(v, dtype="<f4") for uid, v in rows}


def reembed(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "facequeue.cli", "reembed", "--poll-s", "0.2", "--stall-s", "90", *args]
    return subprocess.run(command, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=180)


def test_reembed_restores_vectors_and_names_stranded_faces(client, api_key, worker) -> None:  # type: ignore[no-untyped-def]
    from schema.blobs import drop_blob
    from schema.db import session_scope
    from schema.tables import Embedding, Image

    eileen = upload(client, api_key, astronaut(), set_person_id=f"eileen@{NS}")
    grace = upload(client, api_key, hopper(), set_person_id=f"grace@{NS}")
    query = upload(client, api_key, group(), detection_flags="")
    faces = {uid: wait_for(client, uid, api_key)["faces"] for uid in (eileen, grace, query)}
    eileen_face, grace_face = faces[eileen][0]["face_uuid"], faces[grace][0]["face_uuid"]
    query_faces = [f["face_uuid"] for f in faces[query]]
    assert len(query_faces) == 2
    before = vectors([eileen_face, grace_face], SFACE)
    assert set(before) == {eileen_face, grace_face}, "the fast profile stores SFace vectors"

    # The gallery as an earlier profile left it: no SFace vectors; Hopper's original was dropped since.
    with session_scope() as session:
        session.execute(
            delete(Embedding).where(
                Embedding.face_uid.in_([eileen_face, grace_face]), Embedding.model_id == SFACE
            )
        )
        settings_sha = session.get(Image, grace).sha256
        from facequeue.settings import get_settings

        drop_blob(session, get_settings(), settings_sha)
    missing = recognize(client, api_key, [query_faces[0]], [eileen_face])
    assert missing["status"] == "error" and missing["error"]["code"] == "FACE_HAS_NO_EMBEDDING", missing

    run = reembed("--namespace", NS)
    assert run.returncode == 1, run.stdout + run.stderr  # 1: some faces could not be re-embedded
    assert "1 face(s) in namespace 'reembed' CANNOT be re-embedded" in run.stdout, run.stdout
    assert grace_face in run.stdout and f"grace@{NS}" in run.stdout
    assert "queued 1 face(s) in 1 image(s)" in run.stdout and "done: 1 face(s)" in run.stdout, run.stdout
    assert "re-embedded" in run.stderr  # the tqdm progress bar

    after = vectors([eileen_face, grace_face], SFACE)
    assert set(after) == {eileen_face}, "the stranded face stays without a vector"
    assert float(after[eileen_face] @ before[eileen_face]) > 0.9999, "same image, same points, same vector"

    # Recognition compares SFace vectors only: Eileen is found, Hopper (no SFace vector) is not a candidate.
    result = recognize(client, api_key, query_faces, [f"all@{NS}"])
    assert result["status"] == "done", result
    listed = [m for entry in result["results"] for m in entry["matches"]]
    assert {m["person_id"] for m in listed} == {f"eileen@{NS}"}, result  # Grace has no SFace vector
    assert sum(m["is_match"] for m in listed) == 1, result  # the astronaut in the group photo only
    assert result["identification"]["gallery_size"] == 1
    stranded = recognize(client, api_key, [query_faces[0]], [grace_face])
    assert stranded["error"]["code"] == "FACE_HAS_NO_EMBEDDING"

    # Running it again finds nothing left to do but still names the stranded face; another profile adds
    # its own vectors (dlib's for `accurate`) next to SFace's.
    again = reembed("--namespace", NS)
    assert again.returncode == 1 and "nothing to re-embed" in again.stdout, again.stdout
    accurate = reembed("--namespace", NS, "--profile", "accurate")
    assert "queued 1 face(s)" in accurate.stdout, accurate.stdout + accurate.stderr
    assert set(vectors([eileen_face, grace_face], DLIB)) == {eileen_face}
