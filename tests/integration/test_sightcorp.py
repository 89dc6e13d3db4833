"""Sightcorp F.A.C.E. drop-in (/api/detect/) on the live service: the reference's Python (multipart img)
and PHP (url) examples, values checked against the native result of the same job, every error code."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from api.vendors import sightcorp
from facequeue.settings import get_settings
from tests.integration.conftest import make_key
from tests.integration.helpers import LocalServer
from tests.photos import astronaut, encode, group, hopper

PATH = "/api/detect/"


@pytest.fixture(scope="module")
def key(database: str) -> str:
    return make_key("sightcorp-client")


def native(client, key: str, data: bytes) -> dict:  # type: ignore[no-untyped-def]
    return client.get(f"/v2/media/hash/{hashlib.sha256(data).hexdigest()}", headers={"X-API-Key": key}).json()


def test_python_example_multipart_img(client, key, worker):  # type: ignore[no-untyped-def]
    data = encode(group())
    # requests.post(url, data={'app_key': ...}, files={'img': ('filename', open(...))})
    response = client.post(PATH, data={"app_key": key}, files={"img": ("filename", data)})
    assert response.status_code == 200
    body = response.json()
    assert body["error_code"] == 0 and body["description"] == ""
    assert body["img_size"] == {"w": 1100, "h": 600}
    people = sorted(body["people"], key=lambda p: p["position"]["x"])
    assert len(people) == 2
    eileen, grace = people
    assert eileen["position"]["x"] + eileen["position"]["w"] < 560 <= grace["position"]["x"]
    assert 25 <= eileen["age"] <= 60 and eileen["gender"] > 0
    for p in people:
        eyes = p["landmarks"]
        assert eyes["lefteye"]["x"] > eyes["righteye"]["x"]  # the person's left eye is on the image's right
        assert set(p["rotation"]) == {"yaw", "pitch", "roll"} and abs(p["rotation"]["yaw"]) < 20
        assert "mood" not in p and "ethnicity" not in p  # no model backs them
    # clothingcolors: measured for the best face only.
    assert sum("clothingcolors" in p for p in people) == 1
    colour = next(p["clothingcolors"] for p in people if "clothingcolors" in p)
    assert len(colour) == 1 and len(colour[0]) == 7 and colour[0].startswith("#")

    # Values are the native result's, re-shaped.
    media = native(client, key, data)
    faces = sorted(media["faces"], key=lambda f: f["x"])
    for p, face in zip(people, faces, strict=True):
        assert abs(p["position"]["x"] + p["position"]["w"] / 2 - face["x"]) <= 1
        tags = {t["name"]: t for t in face["tags"]}
        assert p["age"] == round(float(tags["age"]["value"]))
        eye_right_of_image = next(pt for pt in face["points"] if pt["type"] == 768)
        assert p["landmarks"]["lefteye"] == {
            "x": round(eye_right_of_image["x"]),
            "y": round(eye_right_of_image["y"]),
        }
        emotion_tags = {name for name in tags if name.startswith("emotion ")}
        if emotion_tags:  # the emotion model's per-class scores (when this build reports them)
            assert set(p["emotions"]) == set(sightcorp.EMOTIONS)
            assert p["emotions"]["happiness"] == round(tags["emotion happy"]["confidence"] * 100)
        else:
            assert "emotions" not in p


def test_php_example_url(client, key, worker):  # type: ignore[no-untyped-def]
    server = LocalServer(encode(hopper()))
    try:
        # $parameters = array('app_key' => ..., 'url' => ...): a url-encoded form.
        body = client.post(PATH, data={"app_key": key, "url": server.url("/image.jpg")}).json()
    finally:
        server.close()
    assert body["error_code"] == 0 and body["img_size"] == {"w": 512, "h": 600}
    (person,) = body["people"]
    assert person["age"] >= 50


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("bad-key", 1100),
        ("no-image", 1200),
        ("img-and-url", 1200),
        ("not-an-image", 1200),
        ("get", 1200),
        ("url-404", 1300),
        ("url-private", 1300),
    ],
)
def test_error_codes(client, key, worker, case, code):  # type: ignore[no-untyped-def]
    server = LocalServer(b"")
    jpeg = encode(astronaut())
    try:
        response = {
            "bad-key": lambda: client.post(PATH, data={"app_key": "0" * 32}, files={"img": ("a.jpg", jpeg)}),
            "no-image": lambda: client.post(PATH, data={"app_key": key}),
            "img-and-url": lambda: client.post(
                PATH, data={"app_key": key, "url": server.url("/image.jpg")}, files={"img": ("a.jpg", jpeg)}
            ),
            "not-an-image": lambda: client.post(
                PATH, data={"app_key": key}, files={"img": ("a.pdf", b"%PDF-1.4")}
            ),
            "get": lambda: client.get(PATH),
            "url-404": lambda: client.post(PATH, data={"app_key": key, "url": server.url("/missing")}),
            "url-private": lambda: client.post(
                PATH, data={"app_key": key, "url": "http://127.0.0.1:9/a.jpg"}
            ),
        }[case]()
    finally:
        server.close()
    body = response.json()
    assert body["error_code"] == code, body
    assert body["description"] and "people" not in body


def test_server_malfunction_and_rate_limit(client, key, worker, monkeypatch):  # type: ignore[no-untyped-def]
    # 1401: the wait ran out (the service is busy); the job stays queued and finishes later.
    monkeypatch.setattr(get_settings(), "sync_wait_s", 0.001)
    data = encode(np.ascontiguousarray(astronaut()[:, ::-1]))
    busy = client.post(PATH, data={"app_key": key}, files={"img": ("a.jpg", data)}).json()
    assert busy["error_code"] == 1401 and "stays queued" in busy["description"]

    # 1000: a bug on our side (injected), logged; the service keeps serving.
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected fault")

    monkeypatch.setattr(sightcorp, "create_image_job", broken)
    body = client.post(PATH, data={"app_key": key}, files={"img": ("a.jpg", data)}).json()
    assert body == {"error_code": 1000, "description": sightcorp.ERROR_CODES[1000]}
    assert client.get("/health").status_code == 200
