"""Vendor adapters without a service: the README tables, and the pure request/answer mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.vendors import (
    END,
    START,
    azure,
    betaface_xml,
    compatibility_markdown,
    facepp,
    liveness,
    sightcorp,
)
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
    facepp_rows = " ".join(f"{name} {how}" for name, _, how in facepp.FIELDS)
    assert all(attribute.replace("smiling", "smile") in facepp_rows for attribute in facepp.ATTRIBUTES)
    for module in (azure, betaface_xml, facepp, liveness, sightcorp):
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


# Face++ -------------------------------------------------------------------------------------------------

FACEPP_BASE_TAGS = [
    {"name": "gender", "value": "female", "confidence": 0.9},
    {"name": "age", "value": "41", "confidence": 0.5},
    {"name": "smile", "value": "no", "confidence": 0.8},
    {"name": "yaw", "value": "-3.5", "confidence": None},
    {"name": "pitch", "value": "12.0", "confidence": None},
    {"name": "roll", "value": "1.5", "confidence": None},
    {"name": "blur", "value": "low", "confidence": None},
]
EMOTION_PROBS = {"angry": 0.05, "disgust": 0.01, "fear": 0.04, "happy": 0.6, "sad": 0.1, "surprise": 0.1}


def test_facepp_attributes_from_tags_never_invented() -> None:
    face = _face(FACEPP_BASE_TAGS)
    out = facepp.attributes_of(face, list(facepp.ATTRIBUTES))
    assert out == {
        "gender": {"value": "Female"},
        "age": {"value": 41},
        "smile": {"value": 20.0, "threshold": 50.0},  # happy = 1 - 0.8 (smile "no")
        "headpose": {"pitch_angle": 2.0, "roll_angle": 1.5, "yaw_angle": -3.5},  # pitch 0 = frontal
    }
    assert facepp.attributes_of(face, ["age"]) == {"age": {"value": 41}}
    assert facepp.attributes_of(face, []) == {}


def test_facepp_emotion_and_quality_when_the_detect_tags_are_there() -> None:
    emotions = [
        {"name": f"emotion {label}", "value": f"{p:.3f}", "confidence": p}
        for label, p in EMOTION_PROBS.items()
    ]
    partial = facepp.attributes_of(_face(FACEPP_BASE_TAGS + emotions), ["emotion", "facequality"])
    assert partial == {}  # six of seven classes: not all backed, so left out
    neutral = {"name": "emotion neutral", "value": "0.100", "confidence": 0.1}
    quality = {"name": "quality_for_recognition", "value": "high", "confidence": 0.873}
    out = facepp.attributes_of(
        _face(FACEPP_BASE_TAGS + emotions + [neutral, quality]), ["emotion", "facequality"]
    )
    assert out["emotion"] == {
        "anger": 5.0,
        "disgust": 1.0,
        "fear": 4.0,
        "happiness": 60.0,
        "neutral": 10.0,
        "sadness": 10.0,
        "surprise": 10.0,
    }
    assert out["facequality"]["value"] == 87.3


def test_facepp_arguments() -> None:
    assert facepp.parse_rectangle("70,80,100,120") == (80, 70, 180, 190)  # top,left,width,height
    for bad in ("70,80,100", "a,b,c,d", "1,2,0,5", "-1,2,3,4"):
        with pytest.raises(facepp.FaceppError) as error:
            facepp.parse_rectangle(bad)
        assert error.value.message == "BAD_ARGUMENTS:face_rectangle"
    assert facepp.parse_attributes(None) == [] and facepp.parse_attributes("none") == []
    assert facepp.parse_attributes("Gender, age") == ["gender", "age"]
    with pytest.raises(facepp.FaceppError):
        facepp.parse_attributes("gender,ethnicity")


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (ErrorCode.UNAUTHORIZED, 401, "AUTHENTICATION_ERROR"),
        (ErrorCode.IMAGE_TOO_LARGE, 400, "IMAGE_FILE_TOO_LARGE:image_file"),
        (ErrorCode.IMAGE_TOO_MANY_PIXELS, 400, "INVALID_IMAGE_SIZE:image_file"),
        (ErrorCode.NOT_AN_IMAGE, 400, "IMAGE_ERROR_UNSUPPORTED_FORMAT:image_file"),
        (ErrorCode.URL_TIMEOUT, 412, "IMAGE_DOWNLOAD_TIMEOUT"),
        (ErrorCode.URL_FORBIDDEN, 400, "INVALID_IMAGE_URL"),
        (ErrorCode.URL_TOO_LARGE, 400, "IMAGE_FILE_TOO_LARGE:image_file"),
        (ErrorCode.PROCESSING_FAILED, 500, "INTERNAL_ERROR"),
    ],
)
def test_facepp_error_translation(code: ErrorCode, status: int, message: str) -> None:
    error = facepp.translate(code, "x", "image_file")
    assert (error.status, error.message) == (status, message)


def test_facepp_thresholds_from_the_calibration() -> None:
    thresholds = facepp.thresholds()
    assert list(thresholds) == ["1e-3", "1e-4", "1e-5"]
    values = list(thresholds.values())
    assert 0 < values[0] <= values[1] <= values[2] <= 100  # a stricter FMR needs a higher confidence


# Azure Face ---------------------------------------------------------------------------------------------

AZURE_BASE_TAGS = [
    {"name": "age", "value": "41", "confidence": 0.5},
    {"name": "gender", "value": "female", "confidence": 0.9},
    {"name": "smile", "value": "no", "confidence": 0.8},
    {"name": "yaw", "value": "-3.5", "confidence": None},
    {"name": "pitch", "value": "12.0", "confidence": None},
    {"name": "roll", "value": "1.5", "confidence": None},
    {"name": "blur", "value": "medium", "confidence": None},
    {"name": "blur value", "value": "0.412", "confidence": None},
    {"name": "exposure", "value": "goodExposure", "confidence": None},
    {"name": "exposure value", "value": "0.512", "confidence": None},
    {"name": "noise", "value": "low", "confidence": None},
]
EMOTION_TAGS = [
    {"name": f"emotion {label}", "value": f"{p:.3f}", "confidence": p}
    for label, p in zip(
        ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
        (0.05, 0.01, 0.02, 0.6, 0.02, 0.1, 0.2),
        strict=True,
    )
]


def test_azure_attributes_backed_values_only() -> None:
    out = azure.attributes(_face(AZURE_BASE_TAGS), azure.ATTRIBUTES)
    assert out == {
        "age": 41.0,
        "gender": "female",
        "smile": pytest.approx(0.2),
        "headPose": {"roll": 1.5, "yaw": -3.5, "pitch": 2.0},  # pitch 0 = frontal
        "blur": {"blurLevel": "Medium", "value": 0.412},
        "exposure": {"exposureLevel": "GoodExposure", "value": 0.512},
        "noise": {"noiseLevel": "Low"},
    }  # no emotion (no per-class tags), no qualityForRecognition, nothing without a model
    assert azure.attributes(_face(AZURE_BASE_TAGS), ["age"]) == {"age": 41.0}


def test_azure_emotion_and_quality_for_recognition_when_measured() -> None:
    quality = {"name": "quality_for_recognition", "value": "medium", "confidence": 0.55}
    out = azure.attributes(_face(AZURE_BASE_TAGS + EMOTION_TAGS + [quality]), ["emotion", "age"])
    assert out["emotion"] == {
        "anger": 0.05,
        "disgust": 0.01,
        "fear": 0.02,
        "happiness": 0.6,
        "neutral": 0.2,
        "sadness": 0.02,
        "surprise": 0.1,
    }  # contempt: no class measures it
    assert out["qualityForRecognition"] == "medium"
    # An incomplete set of classes is not an emotion answer.
    assert "emotion" not in azure.attributes(_face(AZURE_BASE_TAGS + EMOTION_TAGS[:3]), ["emotion"])


def test_azure_landmarks_and_rectangle() -> None:
    points = [{"x": 5.0 + i, "y": 7.0 + i, "type": i, "name": n} for i, n in enumerate(azure.LANDMARK_NAMES)]
    points.append({"x": 1.0, "y": 1.0, "type": 512, "name": "basic eye left"})
    want = {"faceId": True, "returnRecognitionModel": False, "recognitionModel": "", "landmarks": True}
    entry = azure.face_entry(_face([], points), want | {"attributes": []})
    assert entry["faceRectangle"] == {"width": 100, "height": 121, "left": 10, "top": 20}
    assert list(entry["faceLandmarks"]) == azure.LANDMARK_NAMES
    assert entry["faceLandmarks"]["pupilLeft"] == {"x": 5.0, "y": 7.0}
    assert "faceAttributes" not in entry and "recognitionModel" not in entry


def test_azure_error_mapping_and_envelope() -> None:
    cases = {
        ErrorCode.UNAUTHORIZED: (401, "Unspecified"),
        ErrorCode.URL_UNREACHABLE: (400, "InvalidURL"),
        ErrorCode.EMPTY_IMAGE: (400, "InvalidImageSize"),
        ErrorCode.IMAGE_TOO_LARGE: (400, "InvalidImageSize"),
        ErrorCode.NOT_AN_IMAGE: (400, "InvalidImage"),
        ErrorCode.IMAGE_CORRUPT: (400, "InvalidImage"),
        ErrorCode.INVALID_REQUEST: (400, "BadArgument"),
        ErrorCode.SERVICE_UNAVAILABLE: (429, "RateLimitExceeded"),
        ErrorCode.INTERNAL_ERROR: (500, "InternalServerError"),
    }
    for code, (status, name) in cases.items():
        err = azure.from_native(code, "m")
        assert (err.status, err.code) == (status, name), code
    assert json.loads(azure.error_response(429, "x", "slow").body) == {
        "error": {"statusCode": 429, "message": "slow"}
    }
    with pytest.raises(azure.AzureError) as bad:
        azure.parse_attributes("age,beauty")
    assert bad.value.code == "BadArgument" and "facialHair" in bad.value.message


def test_azure_face_ids_expire_24_hours_after_detection() -> None:
    from datetime import UTC, datetime

    detected = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    image = Image(options={"azure_request": "r"}, created_at=detected)
    assert not azure.face_id_expired(image, datetime(2026, 3, 2, 11, 59, tzinfo=UTC))
    assert azure.face_id_expired(image, datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    persisted = Image(options={"azure": "group g p"}, created_at=detected)
    assert not azure.face_id_expired(persisted, datetime(2030, 1, 1, tzinfo=UTC))
