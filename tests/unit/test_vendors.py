"""Vendor adapters without a service: the README tables, and the pure request/answer mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.vendors import END, START, betaface_xml, compatibility_markdown, liveness, sightcorp
from schema.errors import ErrorCode, FacequeueError
from schema.tables import Face, Image

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_the_adapters_field_lists() -> None:
    text = README.read_text()
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == compatibility_markdown(), (
        "run `python -m api.vendors` and paste its output into README.md"
    )


def test_field_lists_cover_every_documented_code_and_function() -> None:
    def names(fields: list) -> str:
        return " ".join(name for name, _, _ in fields)

    assert all(function in names(betaface_xml.FIELDS) for function in betaface_xml.FUNCTIONS)
    assert all(code in names(liveness.FIELDS) for code in liveness.ERRORS)
    sightcorp_rows = names(sightcorp.FIELDS) + " ".join(how for _, _, how in sightcorp.FIELDS)
    assert all(str(code) in sightcorp_rows for code in sightcorp.ERROR_CODES)
    for module in (betaface_xml, liveness, sightcorp):
        assert {status for _, status, _ in module.FIELDS} <= {"supported", "mapped", "not available"}


# Betaface XML -------------------------------------------------------------------------------------------


def test_xml_request_with_namespaces_arrays_and_nil() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><FacesRecognizeRequest xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><api_key>k</api_key>'
        b'<faces_uids><guid xmlns="http://schemas.microsoft.com/2003/10/Serialization/Arrays">a</guid></faces_uids>'
        b'<parameters xsi:nil="true"/><targets><string xmlns="http://schemas.microsoft.com/2003/10/'
        b'Serialization/Arrays">all@x</string></targets></FacesRecognizeRequest>'
    )
    assert betaface_xml.parse_request(body, 10_000) == {
        "api_key": "k",
        "faces_uids": ["a"],
        "parameters": None,
        "targets": ["all@x"],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'<!DOCTYPE r [<!ENTITY a "x">]><r>&a;</r>',
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>',
        b"<r><unclosed></r>",
        b"",
    ],
    ids=["entity", "external-entity", "malformed", "empty"],
)
def test_hostile_or_broken_xml_is_an_invalid_request(body: bytes) -> None:
    with pytest.raises(FacequeueError) as error:
        betaface_xml.parse_request(body, 10_000)
    assert error.value.code == ErrorCode.INVALID_REQUEST


def test_xml_request_over_the_limit() -> None:
    with pytest.raises(FacequeueError) as error:
        betaface_xml.parse_request(b"<r>" + b"a" * 100 + b"</r>", 50)
    assert error.value.code == ErrorCode.IMAGE_TOO_LARGE


def test_xml_answer_member_order_items_and_nil() -> None:
    xml = betaface_xml.render(
        "BetafaceImageInfoResponse",
        {
            "uid": "u",
            "int_response": 1,
            "string_response": "Request is in the queue",
            "checksum": None,
            "faces": None,
        },
    ).decode()
    assert xml.startswith("<?xml")
    assert (
        '<BetafaceImageInfoResponse xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><int_response>1</int_response>'
        '<string_response>Request is in the queue</string_response><checksum i:nil="true" /><faces i:nil="true" />'
        "<uid>u</uid></BetafaceImageInfoResponse>"
    ) in xml


# Liveness and Sightcorp mappings ------------------------------------------------------------------------


def _face(tags: list[dict], points: list[dict] | None = None) -> Face:
    return Face(x1=10.2, y1=20.0, x2=110.0, y2=140.6, tags=tags, points=points or [])


def test_liveness_without_the_model_names_it_and_the_mirror() -> None:
    face = _face([{"name": "age", "value": "30", "confidence": 0.4}])
    with pytest.raises(liveness.VendorError) as error:
        liveness.face_answer(face)
    assert error.value.error == "INTERNAL_ERROR" and error.value.code == "NOT_AVAILABLE"
    assert "MiniFASNet" in error.value.message and "FACEQUEUE_MODEL_MIRROR" in error.value.message


def test_liveness_job_error_and_quality_order() -> None:
    failed = Image(
        status="error", error_code=ErrorCode.NOT_AVAILABLE.v1, error_message="liveness model missing"
    )
    with pytest.raises(liveness.VendorError) as error:
        liveness.image_answer(failed)
    assert (error.value.error, error.value.code, error.value.status) == (
        "INTERNAL_ERROR",
        "NOT_AVAILABLE",
        501,
    )
    checked = Image(status="done", quality_checks=["FACE_ANGLE_TOO_LARGE", "FACE_TOO_SMALL"])
    with pytest.raises(liveness.VendorError) as error:
        liveness.image_answer(checked)
    assert error.value.error == "FACE_TOO_SMALL"


def test_liveness_face_values() -> None:
    face = _face(
        [
            {"name": "age", "value": "29", "confidence": 0.3},
            {"name": "gender", "value": "male", "confidence": 0.9},
            {"name": "liveness", "value": "real", "confidence": 0.8765},
        ]
    )
    assert liveness.face_answer(face) == {
        "age": 29,
        "gender": -80,
        "passiveLivenessScore": 0.8765,
        "rectangle": {"top": 20, "left": 10, "width": 100, "height": 121, "right": 110, "bottom": 141},
    }


def test_sightcorp_person_eyes_emotions_and_omissions() -> None:
    emotions = [
        {"name": f"emotion {c}", "value": "x", "confidence": p}
        for c, p in [
            ("angry", 0.01),
            ("disgust", 0.0),
            ("fear", 0.02),
            ("happy", 0.9),
            ("sad", 0.03),
            ("surprise", 0.04),
            ("neutral", 0.0),
        ]
    ]
    face = _face(
        [
            {"name": "gender", "value": "female", "confidence": 0.99},
            {"name": "yaw", "value": "1.4", "confidence": 1},
            {"name": "pitch", "value": "2.0", "confidence": 1},
            {"name": "roll", "value": "-1.0", "confidence": 1},
            *emotions,
        ],
        [
            {"x": 40.4, "y": 60.0, "type": 512, "name": "basic eye left"},
            {"x": 80.6, "y": 61.0, "type": 768, "name": "basic eye right"},
        ],
    )
    person = sightcorp.person(face)
    assert person["landmarks"] == {"lefteye": {"x": 81, "y": 61}, "righteye": {"x": 40, "y": 60}}
    assert person["gender"] == 98 and person["rotation"] == {"yaw": 1, "pitch": -8, "roll": -1}
    assert person["emotions"] == {
        "happiness": 90,
        "surprise": 4,
        "anger": 1,
        "disgust": 0,
        "fear": 2,
        "sadness": 3,
    }
    assert {"age", "mood", "ethnicity", "clothingcolors"}.isdisjoint(person)  # nothing backs them here


def test_sightcorp_error_mapping() -> None:
    def code(error: ErrorCode) -> int:
        return json.loads(sightcorp.error_for(error, "m").body)["error_code"]

    assert code(ErrorCode.UNAUTHORIZED) == 1100
    assert (
        code(ErrorCode.NOT_AN_IMAGE)
        == code(ErrorCode.IMAGE_CORRUPT)
        == code(ErrorCode.INVALID_REQUEST)
        == 1200
    )
    assert code(ErrorCode.URL_TIMEOUT) == code(ErrorCode.URL_FORBIDDEN) == 1300
    assert (
        code(ErrorCode.PROCESSING_FAILED)
        == code(ErrorCode.NOT_AVAILABLE)
        == code(ErrorCode.INTERNAL_ERROR)
        == 1000
    )
