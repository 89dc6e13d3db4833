"""Sightcorp F.A.C.E. drop-in: POST /api/detect/ (reference/sightcorp-face-api.txt).

A mapping only: `app_key` is an API key, `img` (multipart) or `url` becomes an ordinary image job
(flags `classifiers,extended`), the request waits for it on the queue (api/wait.py), and the finished
job is written in Sightcorp's shape. Values no model backs are left out (mood, ethnicity, maskpoints).
Sightcorp's `lefteye` is the person's left eye, on the image's right: Betaface's "basic eye right".
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import Db, authenticate
from api.uploads import create_image_job, validate_url
from api.wait import create_and_wait
from facequeue.settings import get_settings
from schema import wire
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.tables import Face, Image
from workers.pipeline.quality_checks import PITCH_FRONTAL

log = logging.getLogger(__name__)
PREFIX = "/api/detect"
router = APIRouter(tags=["vendor: Sightcorp F.A.C.E."])
FLAGS = "classifiers,extended"
EYE_LEFT_IMAGE, EYE_RIGHT_IMAGE = 512, 768  # Betaface basic eye left / right (image sides)
# Sightcorp emotion name → the emotion model's class (tags `emotion <class>`, probability as value).
EMOTIONS = {
    "happiness": "happy",
    "surprise": "surprise",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "sadness": "sad",
}

# error_code → when. 0 = success (people may be empty).
ERROR_CODES = {
    1000: "server malfunction",
    1100: "authentication error: the key is invalid",
    1200: "request error: malformed, missing or unreadable image",
    1300: "remote image error: the url could not be downloaded as an image",
    1400: "out of credits",
    1401: "rate limit exceeded",
}
REQUEST_ERRORS = {
    ErrorCode.INVALID_REQUEST,
    ErrorCode.EMPTY_IMAGE,
    ErrorCode.BAD_BASE64,
    ErrorCode.IMAGE_TOO_LARGE,
    ErrorCode.NOT_AN_IMAGE,
    ErrorCode.IMAGE_CORRUPT,
    ErrorCode.IMAGE_TOO_MANY_PIXELS,
    ErrorCode.NOT_FOUND,
}
# Added to this build by backpressure (when present): "slow down" in Sightcorp's words.
RATE_LIMIT_NAMES = {"RATE_LIMITED", "TOO_MANY_QUEUED"}

# (vendor field, status, how) for the README's compatibility table (tests check the README against it).
FIELDS = [
    ("app_key", "mapped", "an API key"),
    ("img (multipart)", "supported", "JPEG, PNG and the other formats of the native API"),
    ("url", "supported", "fetched by a worker under the native URL policy and timeout"),
    (
        "error_code, description",
        "supported",
        "0, 1000, 1100, 1200, 1300, 1401 (1401 also when the wait times out)",
    ),
    ("error_code 1400 (credits)", "not available", "a self-hosted service has no credits"),
    ("img_size.w, img_size.h", "supported", "pixels after EXIF orientation"),
    ("people[].age", "supported", "age model, years"),
    ("people[].gender", "mapped", "−100 (male) … +100 (female) from the gender model's probability"),
    ("people[].mood", "not available", "no model measures mood"),
    ("people[].position.x, y, w, h", "supported", "detector box, top-left corner and size"),
    ("people[].rotation.yaw, pitch, roll", "mapped", "mesh head pose in degrees; pitch 0 = frontal"),
    (
        "people[].landmarks.lefteye, righteye",
        "supported",
        "detector eye points; lefteye = the person's left (image right)",
    ),
    ("people[].landmarks.maskpoints", "not available", "their point set is not documented"),
    ("people[].clothingcolors", "mapped", "one colour, best face only (`color clothes middle`)"),
    ("people[].ethnicity", "not available", "no model; never inferred"),
    (
        "people[].emotions",
        "supported",
        "emotion model probabilities × 100 for its six classes (needs `emotion <class>` tags)",
    ),
]


def _error(code: int, description: str | None = None) -> JSONResponse:
    return JSONResponse({"error_code": code, "description": description or ERROR_CODES[code]})


def error_for(code: ErrorCode, message: str) -> JSONResponse:
    if code == ErrorCode.UNAUTHORIZED:
        return _error(1100, message)
    if code.name.startswith("URL_"):
        return _error(1300, message)
    if code.name in RATE_LIMIT_NAMES:
        return _error(1401, message)
    if code in REQUEST_ERRORS or code in (ErrorCode.INVALID_PERSON_ID, ErrorCode.INVALID_TARGET):
        return _error(1200, message)
    return _error(1000, message)


def _point(face: Face, kind: int) -> dict[str, int] | None:
    for point in face.points:
        if point["type"] == kind:
            return {"x": round(point["x"]), "y": round(point["y"])}
    return None


def person(face: Face) -> dict[str, Any]:
    tags = {tag["name"]: tag for tag in face.tags}
    out: dict[str, Any] = {}
    if "age" in tags:
        out["age"] = round(float(tags["age"]["value"]))
    if "gender" in tags:
        female = tags["gender"]["confidence"]
        female = female if tags["gender"]["value"] == "female" else 1 - female
        out["gender"] = round((2 * female - 1) * 100)
    out["position"] = {
        "x": round(face.x1),
        "y": round(face.y1),
        "w": round(face.x2 - face.x1),
        "h": round(face.y2 - face.y1),
    }
    if {"yaw", "pitch", "roll"} <= tags.keys():
        out["rotation"] = {
            "yaw": round(float(tags["yaw"]["value"])),
            "pitch": round(float(tags["pitch"]["value"]) - PITCH_FRONTAL),
            "roll": round(float(tags["roll"]["value"])),
        }
    left, right = _point(face, EYE_RIGHT_IMAGE), _point(face, EYE_LEFT_IMAGE)
    if left and right:
        out["landmarks"] = {"lefteye": left, "righteye": right}
    if "color clothes middle" in tags:
        out["clothingcolors"] = ["#" + tags["color clothes middle"]["value"].lstrip("#").lower()]
    emotions = {name: tags.get(f"emotion {label}") for name, label in EMOTIONS.items()}
    if all(emotions.values()):
        out["emotions"] = {name: round(float(tag["confidence"]) * 100) for name, tag in emotions.items()}
    return out


def image_answer(image: Image) -> JSONResponse:
    if image.status == JobStatus.ERROR:
        return error_for(*wire.job_error(image))
    return JSONResponse(
        {
            "error_code": 0,
            "description": "",
            "img_size": {"w": image.width, "h": image.height},
            "people": [person(face) for face in image.faces],
        }
    )


FORM_SCHEMA = {
    "type": "object",
    "required": ["app_key"],
    "properties": {
        "app_key": {"type": "string", "description": "an API key"},
        "img": {"type": "string", "format": "binary", "description": "the image (or send url)"},
        "url": {"type": "string", "description": "URL of the image (or send img)"},
    },
}


@router.post(
    PREFIX + "/",
    summary="Sightcorp F.A.C.E. detect (drop-in)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": FORM_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": FORM_SCHEMA},
            },
        }
    },
)
@router.post(PREFIX, include_in_schema=False)
async def detect(request: Request, session: Db) -> JSONResponse:
    try:
        try:
            form = await request.form()
        except Exception as exc:  # not a form body
            raise FacequeueError(
                ErrorCode.INVALID_REQUEST, f"send a multipart or url-encoded form: {exc}"
            ) from exc
        img, url = form.get("img"), form.get("url")
        if isinstance(img, str) or (img is None) == (not url):
            raise FacequeueError(ErrorCode.INVALID_REQUEST, "send exactly one of img (a file) and url")
        settings = get_settings()
        data = await img.read(settings.max_upload_bytes + 1) if isinstance(img, UploadFile) else None
        key = form.get("app_key")

        def create() -> Image:
            tenant = authenticate(session, request, key if isinstance(key, str) else None)
            return create_image_job(
                session,
                settings,
                tenant,
                data=data,
                url=None if data is not None else validate_url(str(url), settings, "url"),
                detection_flags=FLAGS,
                original_filename=img.filename if isinstance(img, UploadFile) else str(url),
            )

        image, finished = await create_and_wait(session, create)
        if not finished:
            return _error(
                1401,
                f"analysis not finished within FACEQUEUE_SYNC_WAIT_S (the service is busy); the job "
                f"{image.uid} stays queued (GET /v2/media/{image.uid})",
            )
        return await run_in_threadpool(image_answer, image)
    except FacequeueError as exc:
        return error_for(exc.code, exc.message)
    except Exception:
        log.exception("sightcorp detect failed")
        return _error(1000)
