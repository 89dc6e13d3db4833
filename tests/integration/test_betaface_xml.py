"""Betaface v1 XML (/service.svc/): the reference's own request examples, replayed on the live service.

The requests are written as betaface-api.txt shows them (XML declaration, xmlns:xsd/xmlns:xsi on the
root, array items in Microsoft's Arrays namespace, api_key + api_secret); the answers are read as an
XML client reads them.
"""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tests.integration.conftest import make_key
from tests.integration.helpers import LocalServer
from tests.photos import astronaut, encode, group, hopper

HEAD = '<?xml version="1.0" encoding="utf-8"?>'
ROOT_NS = 'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
ARRAYS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
SECRET = "171e8465-f548-401d-b63b-caf0dc28df5f"  # any secret is accepted: keys alone authenticate
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"


def call(client, function: str, xml: str, expect: str) -> ET.Element:  # type: ignore[no-untyped-def]
    response = client.post(
        f"/service.svc/{function}", content=xml.encode(), headers={"Content-Type": "application/xml"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    assert root.tag == expect, response.text
    return root


def request(root: str, key: str, **fields: str) -> str:
    body = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f"{HEAD}<{root} {ROOT_NS}><api_key>{key}</api_key><api_secret>{SECRET}</api_secret>{body}</{root}>"


def array(tag: str, values: list[str]) -> str:
    return "".join(f'<{tag} xmlns="{ARRAYS}">{v}</{tag}>' for v in values)


def upload(client, key: str, data: bytes, name: str, flags: str = "") -> str:  # type: ignore[no-untyped-def]
    xml = request(
        "ImageRequestBinary",
        key,
        detection_flags=flags,
        imagefile_data=base64.b64encode(data).decode(),
        original_filename=name,
    )
    root = call(client, "UploadNewImage_File", xml, "BetafaceImageResponse")
    assert root.findtext("int_response") == "0" and root.findtext("string_response") == "ok"
    return root.findtext("img_uid")


def image_info(client, key: str, uid: str) -> ET.Element:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while True:
        root = call(
            client,
            "GetImageInfo",
            request("ImageInfoRequestUid", key, img_uid=uid),
            "BetafaceImageInfoResponse",
        )
        if root.findtext("int_response") != "1":
            return root
        # The reference's "not yet processed" answer: checksum and faces are i:nil.
        assert root.findtext("string_response") == "Request is in the queue"
        assert root.find("faces").get(XSI_NIL) == "true"
        assert time.monotonic() < deadline
        time.sleep(0.2)


def recognize(client, key: str, face: str, targets: list[str]) -> ET.Element:  # type: ignore[no-untyped-def]
    # Faces_Recognize exactly as the reference's examples 1 and 2: guid / string items, group_results.
    xml = request(
        "FacesRecognizeRequest",
        key,
        faces_uids=array("guid", [face]),
        group_results="false",
        targets=array("string", targets),
    )
    root = call(client, "Faces_Recognize", xml, "BetafaceRecognizeRequestResponse")
    assert root.findtext("int_response") == "0"
    uid = root.findtext("recognize_uid")
    deadline = time.monotonic() + 60
    while True:
        result = call(
            client,
            "GetRecognizeResult",
            request("RecognizeResultRequest", key, recognize_uid=uid),
            "BetafaceRecognizeResponse",
        )
        if result.findtext("int_response") != "1":
            assert result.findtext("int_response") == "0", ET.tostring(result)
            assert result.findtext("recognize_uid") == uid
            return result
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.fixture(scope="module")
def key(database: str) -> str:
    return make_key("betaface-xml")


@pytest.fixture(scope="module")
def faces(client, key, workers) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Face uids: eileen (astronaut), grace (Hopper), both again from the group photo, and two variants."""
    workers.ensure()
    photos = {
        "eileen": encode(astronaut()),
        "grace": encode(hopper()),
        "group": encode(group()),
        "eileen_mirrored": encode(np.ascontiguousarray(astronaut()[:, ::-1])),
        "grace_small": encode(np.ascontiguousarray(hopper()[::2, ::2])),
    }
    uids = {name: upload(client, key, data, f"{name}.jpg", flags="bestface") for name, data in photos.items()}
    found = {}
    for name, uid in uids.items():
        root = image_info(client, key, uid)
        assert root.findtext("int_response") == "0"
        found[name] = [f.findtext("uid") for f in root.find("faces").findall("FaceInfo")]
    assert len(found["group"]) == 1  # bestface: one face per image
    return {name: uids_[0] for name, uids_ in found.items()}


def test_upload_and_image_info_documented_shape(client, key, worker):  # type: ignore[no-untyped-def]
    data = encode(astronaut())
    uid = upload(client, key, data, "eileen.jpg")  # default flags: propoints,classifiers
    root = image_info(client, key, uid)
    assert root.findtext("int_response") == "0" and root.findtext("string_response") == "ok"
    assert root.findtext("uid") == uid and root.findtext("original_filename") == "eileen.jpg"
    (face,) = root.find("faces").findall("FaceInfo")
    points = {int(p.findtext("type")): p for p in face.find("points").findall("PointInfo")}
    # The reference's first points: basic eye left 512, basic eye right 768; image-left eye has smaller x.
    assert (
        points[512].findtext("name") == "basic eye left" and points[768].findtext("name") == "basic eye right"
    )
    assert float(points[512].findtext("x")) < float(points[768].findtext("x"))
    assert [c.tag for c in points[512]] == ["name", "type", "x", "y"]  # the reference's member order
    tags = {t.findtext("name"): t for t in face.find("tags").findall("TagInfo")}
    assert tags["gender"].findtext("value") == "female"
    assert 20 <= float(tags["age"].findtext("value")) <= 60
    assert face.find("user_points").get(XSI_NIL) == "true"
    x, y, w = (float(face.findtext(k)) for k in ("x", "y", "width"))
    assert 150 < x < 300 and 50 < y < 250 and 60 < w < 250  # Eileen Collins' face in the 512² portrait

    # GetImageFileInfo by SHA-256 answers the same image; UploadNewImage_Url by URL.
    checksum = root.findtext("checksum")
    by_sum = call(
        client,
        "GetImageFileInfo",
        request("ImageInfoRequestChecksum", key, img_checksum=checksum),
        "BetafaceImageInfoResponse",
    )
    assert by_sum.findtext("uid") == uid
    server = LocalServer(encode(hopper()))
    try:
        url_root = call(
            client,
            "UploadNewImage_Url",
            request("ImageRequestUrl", key, image_url=server.url("/image.jpg")),
            "BetafaceImageResponse",
        )
        url_info = image_info(client, key, url_root.findtext("img_uid"))
    finally:
        server.close()
    assert url_info.findtext("int_response") == "0" and len(url_info.find("faces")) == 1


def test_recognize_examples(client, key, faces):  # type: ignore[no-untyped-def]
    # Example 1: compare one face with 5 other faces.
    others = ["grace", "group", "eileen_mirrored", "grace_small"]
    result = recognize(client, key, faces["eileen"], [faces[o] for o in others])
    (info,) = result.find("faces_matches").findall("FaceRecognizeInfo")
    assert info.findtext("face_uid") == faces["eileen"]
    matches = {m.findtext("face_uid"): m for m in info.find("matches").findall("PersonMatchInfo")}
    assert set(matches) == {faces[o] for o in others}
    assert matches[faces["eileen_mirrored"]].findtext("is_match") == "true"
    assert matches[faces["grace"]].findtext("is_match") == "false"
    assert matches[faces["grace_small"]].findtext("is_match") == "false"
    assert all(m.findtext("person_name") == "" for m in matches.values())  # faces, not persons

    # Example 2: set persons, then compare with all persons of a namespace.
    for name, face in (
        ("Eileen Collins@crew", faces["eileen_mirrored"]),
        ("Grace Hopper@crew", faces["grace"]),
    ):
        xml = request("FacesSetPersonRequest", key, faces_uids=array("guid", [face]), person_id=name)
        root = call(client, "Faces_SetPerson", xml, "BetafaceResponse")
        assert root.findtext("int_response") == "0"
    result = recognize(client, key, faces["eileen"], ["all@crew"])
    best = result.find("faces_matches").find("FaceRecognizeInfo").find("matches").find("PersonMatchInfo")
    assert best.findtext("person_name") == "Eileen Collins@crew" and best.findtext("is_match") == "true"
    assert 0.5 < float(best.findtext("confidence")) <= 1


def test_face_image_and_transform(client, key, faces):  # type: ignore[no-untyped-def]
    root = call(
        client,
        "GetFaceImage",
        request("FaceRequestId", key, face_uid=faces["grace"]),
        "BetafaceFaceImageResponse",
    )
    assert root.findtext("int_response") == "0" and root.findtext("uid") == faces["grace"]
    assert base64.b64decode(root.findtext("face_image"))[:2] == b"\xff\xd8"  # a JPEG
    xml = request(
        "FacesTransformRequest",
        key,
        faces_uids=array("guid", [faces["grace"], faces["grace_small"]]),
        action="0",
    )
    root = call(client, "Transform_Faces", xml, "BetafaceTransformResponse")
    assert root.findtext("int_response") == "0"
    assert base64.b64decode(root.findtext("face_image"))[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("function", "xml", "code", "expect"),
    [
        (
            "GetImageInfo",
            "KEY:ImageInfoRequestUid:img_uid=00000000-0000-0000-0000-000000000000",
            -5,
            "BetafaceImageInfoResponse",
        ),
        ("GetImageInfo", "WRONG:ImageInfoRequestUid:img_uid=x", -2, "BetafaceImageInfoResponse"),
        ("UploadNewImage_File", "KEY:ImageRequestBinary:imagefile_data=@@@", -11, "BetafaceImageResponse"),
        (
            "UploadNewImage_File",
            "KEY:ImageRequestBinary:imagefile_data=" + base64.b64encode(b"%PDF-1.4").decode(),
            -13,
            "BetafaceImageResponse",
        ),
        (
            "UploadNewImage_Url",
            "KEY:ImageRequestUrl:image_url=http://127.0.0.1/x.jpg",
            -21,
            "BetafaceImageResponse",
        ),
        ("Faces_SetPerson", "KEY:FacesSetPersonRequest:person_id=bad/name@x", -4, "BetafaceResponse"),
        (
            "GetRecognizeResult",
            "KEY:RecognizeResultRequest:recognize_uid=nope",
            -5,
            "BetafaceRecognizeResponse",
        ),
        ("GetImageInfo", "<ImageInfoRequestUid><api_key>", -4, "BetafaceImageInfoResponse"),  # malformed
        # Hostile XML: an entity bomb and an external entity are refused before anything expands.
        (
            "GetImageInfo",
            '<!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><r><img_uid>&b;</img_uid></r>',
            -4,
            "BetafaceImageInfoResponse",
        ),
        (
            "GetImageInfo",
            '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><img_uid>&x;</img_uid></r>',
            -4,
            "BetafaceImageInfoResponse",
        ),
        ("NoSuchFunction", "<r/>", -5, "BetafaceResponse"),
    ],
    ids=[
        "unknown-uid",
        "bad-key",
        "bad-base64",
        "not-an-image",
        "private-url",
        "no-faces",
        "unknown-recognition",
        "malformed",
        "entity-bomb",
        "external-entity",
        "unknown-function",
    ],
)
def test_errors_in_the_functions_response_type(client, key, function, xml, code, expect):  # type: ignore[no-untyped-def]
    if xml.startswith(("KEY:", "WRONG:")):
        who, root, field = xml.split(":", 2)
        name, value = field.split("=", 1)
        xml = request(root, key if who == "KEY" else "wrong-key", **{name: value})
    root = call(client, function, xml, expect)
    assert root.findtext("int_response") == str(code), ET.tostring(root)
    assert root.findtext("string_response")
