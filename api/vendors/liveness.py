"""Liveness API drop-in: POST /api/v1/face/detect (reference/liveness-face-detect-api.txt).

A mapping only: the request becomes an ordinary image job (flags `classifiers,liveness`, upload option
`quality_checks`), the request waits for it on the queue (api/wait.py), and the finished job is written
in the vendor's shape. HTTP Basic auth: the password is the API key (the user name is free, e.g. the
tenant's name); a key given as the user name with an empty password is accepted too.

The quality codes are the worker's `quality_checks` (workers/pipeline/quality_checks.py), the first one
in the reference's order is the `error`. FACE_IS_OCCLUDED is never returned: no model in the pack
measures occlusion, so an occluded face is judged like any other (README says so).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Db, authenticate
from api.faces import face_crop, jpeg
from api.uploads import create_image_job, decode_base64, validate_url
from api.wait import create_and_wait
from facequeue.settings import get_settings
from schema import wire
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.inputs import Base64, Short, WireModel
from schema.tables import Face, Image

log = logging.getLogger(__name__)
PREFIX = "/api/v1/face/"
router = APIRouter(tags=["vendor: liveness API"])
basic = HTTPBasic(auto_error=False)
FLAGS = "classifiers,liveness"
INTERNAL_ERROR = "INTERNAL_ERROR"
FACE_IS_OCCLUDED = "FACE_IS_OCCLUDED"  # in the vendor's list; not measurable here (see module docstring)
# The reference's error list, in its order; the first that applies is the answer's `error`.
ERRORS = (
    "FACE_TOO_CLOSE",
    "FACE_CLOSE_TO_BORDER",
    "FACE_CROPPED",
    FACE_IS_OCCLUDED,
    "FACE_NOT_FOUND",
    "TOO_MANY_FACES",
    "FACE_TOO_SMALL",
    "FACE_ANGLE_TOO_LARGE",
    INTERNAL_ERROR,
)
# Severity of the worker's quality codes (quality_checks lists them in this order).
SEVERITY = (
    "FACE_NOT_FOUND",
    "TOO_MANY_FACES",
    "FACE_TOO_SMALL",
    "FACE_TOO_CLOSE",
    "FACE_CROPPED",
    "FACE_CLOSE_TO_BORDER",
    "FACE_ANGLE_TOO_LARGE",
)
LIVENESS_MODEL = "passive liveness model (MiniFASNet V2 + V1SE)"

# (vendor field, status, how) for the README's compatibility table (tests check the README against it).
FIELDS = [
    ("Authorization: Basic", "mapped", "password = API key (or user = key, empty password)"),
    ("sessionId", "supported", "echoed in every answer"),
    ("faceImageBase (request)", "supported", "base64 (data URI too) or an http(s) URL fetched by a worker"),
    ("returnFaceImage", "supported", "adds faceImageBase: the face box grown by 25 %, JPEG"),
    ("hasError", "supported", "true with `error` on any failure"),
    ("face.age", "supported", "age model, years"),
    (
        "face.gender",
        "mapped",
        "signed score −100 (male) … +100 (female); the reference does not document its scale",
    ),
    ("face.passiveLivenessScore", "supported", "MiniFASNet V2 + V1SE real-class probability, threshold 0.5"),
    ("face.rectangle", "supported", "top, left, width, height, plus right and bottom"),
    (
        "faceImageBase (response)",
        "supported",
        "in `face` as in the example, and at the top level as in the table",
    ),
    (
        "error: FACE_NOT_FOUND, TOO_MANY_FACES, FACE_TOO_SMALL, FACE_TOO_CLOSE, FACE_CROPPED, FACE_CLOSE_TO_BORDER, FACE_ANGLE_TOO_LARGE",
        "supported",
        "quality_checks, thresholds in FACEQUEUE_QUALITY_THRESHOLDS",
    ),
    ("error: FACE_IS_OCCLUDED", "not available", "no model in the pack measures occlusion; never returned"),
    ("error: INTERNAL_ERROR", "mapped", "any other failure; our `code` and `message` are added"),
]


class DetectRequest(WireModel):  # schema.inputs: the wire check every request body gets
    sessionId: Short | None = None
    faceImageBase: Base64 | None = None
    returnFaceImage: bool = False


class VendorError(Exception):
    def __init__(self, error: str, status: int = 200, code: str | None = None, message: str | None = None):
        self.error, self.status, self.code, self.message = error, status, code, message


def _tags(face: Face) -> dict[str, dict]:
    return {tag["name"]: tag for tag in face.tags}


def gender_score(tag: dict | None) -> int | None:
    """−100 (surely male) … +100 (surely female), from the gender model's probability."""
    if tag is None:
        return None
    female = tag["confidence"] if tag["value"] == "female" else 1 - tag["confidence"]
    return round((2 * female - 1) * 100)


def face_answer(face: Face) -> dict[str, Any]:
    tags = _tags(face)
    if "liveness" not in tags:  # the optional model is not installed on the workers
        raise VendorError(
            INTERNAL_ERROR,
            ErrorCode.NOT_AVAILABLE.http_status,
            ErrorCode.NOT_AVAILABLE.name,
            f"the {LIVENESS_MODEL} is not installed on the workers; fetch it with `facequeue models fetch` "
            "or put its files in FACEQUEUE_MODEL_MIRROR",
        )
    left, top = round(face.x1), round(face.y1)
    right, bottom = round(face.x2), round(face.y2)
    answer: dict[str, Any] = {}
    if "age" in tags:
        answer["age"] = round(float(tags["age"]["value"]))
    if (gender := gender_score(tags.get("gender"))) is not None:
        answer["gender"] = gender
    answer["passiveLivenessScore"] = round(float(tags["liveness"]["confidence"]), 4)
    answer["rectangle"] = {
        "top": top,
        "left": left,
        "width": right - left,
        "height": bottom - top,
        "right": right,
        "bottom": bottom,
    }
    return answer


def image_answer(image: Image) -> dict[str, Any]:
    """The vendor's body for a finished job (without sessionId); raises VendorError for its errors."""
    if image.status == JobStatus.ERROR:
        code, message = wire.job_error(image)
        raise VendorError(INTERNAL_ERROR, code.http_status, code.name, message)
    checks = sorted(image.quality_checks or [], key=SEVERITY.index)
    if checks:
        raise VendorError(checks[0])
    return {"hasError": False, "face": face_answer(image.faces[0])}


def _error_body(session_id: str | None, error: VendorError) -> JSONResponse:
    body: dict[str, Any] = {"sessionId": session_id, "hasError": True, "error": error.error}
    if error.code:
        body.update(code=error.code, message=error.message)
    headers = {"WWW-Authenticate": "Basic"} if error.status == 401 else None
    return JSONResponse(body, status_code=error.status, headers=headers)


def error_response(code: ErrorCode, message: str) -> JSONResponse:
    """Errors found before the endpoint runs (wrong method, unknown path)."""
    return _error_body(None, VendorError(INTERNAL_ERROR, code.http_status, code.name, message))


def _key(credentials: HTTPBasicCredentials | None) -> str | None:
    if credentials is None:
        return None
    return credentials.password or credentials.username


@router.post(
    PREFIX + "detect",
    summary="Liveness API face detect (drop-in)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DetectRequest.model_json_schema()}},
        }
    },
)
async def detect(
    request: Request,
    session: Db,
    credentials: HTTPBasicCredentials | None = Depends(basic),
) -> JSONResponse:
    session_id = None
    try:
        try:
            raw = json.loads(await request.body() or b"{}")
            session_id = raw.get("sessionId") if isinstance(raw, dict) else None
            body = DetectRequest.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            raise FacequeueError(ErrorCode.INVALID_REQUEST, f"malformed request: {exc}") from exc
        source = (body.faceImageBase or "").strip()
        is_url = source.lower().startswith(("http://", "https://"))

        def create() -> Image:
            tenant = authenticate(session, request, _key(credentials))
            settings = get_settings()
            return create_image_job(
                session,
                settings,
                tenant,
                data=None if is_url else decode_base64(source, "faceImageBase"),
                url=validate_url(source, settings, "faceImageBase") if is_url else None,
                detection_flags=FLAGS,
                original_filename=source if is_url else None,
                options={"quality_checks": True},
            )

        image, finished = await create_and_wait(session, create)
        if not finished:
            raise VendorError(
                INTERNAL_ERROR,
                503,
                "TIMEOUT",
                f"not finished within FACEQUEUE_SYNC_WAIT_S; the job {image.uid} stays queued "
                f"(GET /v2/media/{image.uid})",
            )
        answer = await run_in_threadpool(image_answer, image)
        if body.returnFaceImage:
            crop = await run_in_threadpool(face_crop, image.faces[0], False, 224)
            encoded = base64.b64encode(jpeg(crop)).decode()
            answer["face"]["faceImageBase"] = encoded
            answer["faceImageBase"] = encoded
        return JSONResponse({"sessionId": session_id, **answer})
    except VendorError as exc:
        return _error_body(session_id, exc)
    except FacequeueError as exc:
        return _error_body(
            session_id, VendorError(INTERNAL_ERROR, exc.code.http_status, exc.code.name, exc.message)
        )
    except Exception:
        log.exception("liveness detect failed")
        return _error_body(
            session_id, VendorError(INTERNAL_ERROR, 500, ErrorCode.INTERNAL_ERROR.name, "internal error")
        )
