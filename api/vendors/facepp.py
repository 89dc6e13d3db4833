"""Face++ v3 drop-in: /facepp/v3/... (reference/faceplusplus-detect-v3.txt, and Face++'s pages for the
FaceSet, compare, search and face/* calls that the reference's detect page refers to).

A mapping only. `api_key` is our API key; `api_secret` must be present, as Face++ requires, and is not
checked (our keys have no secret). Images become ordinary image jobs that the request waits for on the
queue (api/wait.py); comparisons and searches become ordinary recognition jobs (workers/recognize.py).

- face_token = a face's uid, image_id = the job's uid. Every detect call is a new job (Face++ gives new
  tokens each time). A token expires 72 h after its detect unless it is in a FaceSet; the workers' reaper
  then erases it (schema/erase.purge_expired_tokens).
- A FaceSet is a namespace of its own (`facepp_<token hex>`) with one person per face (named by the face
  token); its Face++ metadata is in `facepp_facesets`. A face is in at most one FaceSet at a time (Face++
  allows several): adding it to another moves it.
- Landmarks: return_landmark=1/2 are the 83/106-point sets of workers/pipeline/landmark_sets.py, made by
  the job itself (landmark_set option; 106 when detect asks for none). face/analyze answers from what the
  detect stored: landmarks only in that set (return_landmark=1 on analyze needs a detect with 1).
- Attributes: only those a model backs (gender, age, smiling, headpose; emotion and facequality when the
  face carries the `emotion <class>` / `quality_for_recognition` tags). The others are left out.
- confidence (compare, search) = our calibrated P(same person) x 100; thresholds = that confidence at the
  calibrated distance thresholds for FMR 1e-3, 1e-4, 1e-5 (workers/recognition/calibration.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from api.deps import Db, authenticate, is_uuid
from api.recognition import create_recognize_job
from api.uploads import create_image_job, decode_base64, validate_url
from api.wait import create_and_wait, wait_finished
from facequeue.settings import get_settings
from schema import wire
from schema.erase import delete_namespace
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.images import sniff
from schema.persons import set_person
from schema.tables import Face, FaceppFaceSet, FaceppUserId, Image, Namespace, Person, RecognizeJob, Tenant
from workers.pipeline.attributes import SMILE_HAPPY
from workers.pipeline.quality_checks import PITCH_FRONTAL
from workers.recognition import calibration
from workers.recognize import calibration_key

log = logging.getLogger(__name__)
PREFIX = "/facepp/v3"
router = APIRouter(prefix=PREFIX, tags=["vendor: Face++ v3"])
TOKEN_LIFETIME = timedelta(hours=72)
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # "no larger than 2MB"
ENTITY_LIMIT = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024  # a base64 image of the largest size, and the form
MIN_SIDE, MAX_SIDE = 48, 4096
ANALYSED = 5  # calculate_all=0: "only the 5 largest faces by its bounding box size will be analyzed"
LANDMARK_SETS = {1: "facepp83", 2: "facepp106"}
ATTRIBUTES = (
    "gender",
    "age",
    "smiling",
    "headpose",
    "facequality",
    "blur",
    "eyestatus",
    "emotion",
    "beauty",
    "mouthstatus",
    "eyegaze",
    "skinstatus",
)
# Face++ emotion name -> the emotion model's class (`emotion <class>` tags, probability as confidence).
EMOTIONS = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprise",
}
FMR_KEYS = {"1e-3": 1e-3, "1e-4": 1e-4, "1e-5": 1e-5}
NAMESPACE_PREFIX = "facepp_"
MAX_FACE_TOKENS = 5  # per addface / removeface / analyze call, as Face++
RATE_LIMIT_NAMES = {"RATE_LIMITED", "TOO_MANY_QUEUED"}  # backpressure codes, when this build has them

# (vendor field, status, how) for the README's compatibility table (tests check the README against it).
FIELDS = [
    ("api_key", "mapped", "an API key"),
    ("api_secret", "mapped", "required as documented, not checked (our keys have no secret)"),
    ("detect: image_file, image_base64, image_url", "supported", "that precedence; JPEG, PNG (and more)"),
    ("detect: return_landmark 1 (83 points)", "supported", "mesh + iris points, Face++ names"),
    ("detect: return_landmark 2 (106 points)", "supported", "mesh + iris points, Face++ names"),
    ("detect: calculate_all", "supported", "0 = the 5 largest faces get landmarks/attributes"),
    ("detect: face_rectangle", "mapped", "the detected face overlapping it most, reported as given"),
    ("face_token", "mapped", "face uid; expires (and is erased) after 72 h unless in a FaceSet"),
    ("image_id, request_id, time_used", "supported", "job uid, per request, milliseconds"),
    ("face_rectangle", "supported", "detector box"),
    ("attributes.gender", "supported", "gender model"),
    ("attributes.age", "supported", "age model, years"),
    ("attributes.smile", "mapped", "emotion model's happy probability x 100, threshold 50"),
    ("attributes.headpose", "mapped", "mesh head pose in degrees; pitch 0 = frontal"),
    (
        "attributes.emotion",
        "supported",
        "emotion model probabilities x 100, 7 classes (needs `emotion <class>` tags)",
    ),
    (
        "attributes.facequality",
        "mapped",
        "recognition usefulness x 100 (needs the `quality_for_recognition` tag)",
    ),
    ("attributes.blur", "not available", "a sharpness level exists, no calibrated 0-100 blurness"),
    ("attributes.eyestatus", "not available", "no model for glasses or eye occlusion"),
    ("attributes.glass", "not available", "no glasses model"),
    ("attributes.mouthstatus", "not available", "no model for masks or mouth occlusion"),
    ("attributes.eyegaze", "not available", "no gaze model"),
    ("attributes.beauty", "not available", "never inferred"),
    ("attributes.skinstatus", "not available", "no skin model"),
    ("compare", "supported", "face_token1/2 or images; confidence = calibrated P(same) x 100"),
    ("compare/search: thresholds 1e-3, 1e-4, 1e-5", "mapped", "confidence at the calibrated FMR thresholds"),
    ("search", "supported", "FaceSet by faceset_token or outer_id; return_result_count 1-5"),
    ("faceset/create, addface, removeface, update", "supported", "a namespace, one person per face"),
    ("faceset/getdetail, getfacesets, delete", "supported", "check_empty honoured"),
    ("FaceSet outer_id, display_name, user_data, tags", "supported", "stored with the FaceSet"),
    ("face/analyze", "mapped", "the detect's attributes; landmarks in its set (106 unless it asked for 83)"),
    ("face/getdetail, face/setuserid", "supported", "user_id stored per face"),
    ("a face in several FaceSets", "not available", "a face is in one FaceSet at a time"),
    (
        "error_message + HTTP status",
        "supported",
        "MISSING_ARGUMENTS, BAD_ARGUMENTS, COEXISTENCE_ARGUMENTS, AUTHENTICATION_ERROR, "
        "IMAGE_ERROR_UNSUPPORTED_FORMAT, INVALID_IMAGE_SIZE, INVALID_IMAGE_URL, IMAGE_FILE_TOO_LARGE, "
        "IMAGE_DOWNLOAD_TIMEOUT, CONCURRENCY_LIMIT_EXCEEDED (also when the wait runs out), 413, "
        "API_NOT_FOUND, INTERNAL_ERROR, INVALID_FACE_TOKEN, INVALID_FACESET_TOKEN, INVALID_OUTER_ID, "
        "FACESET_EXIST, FACESET_NOT_EMPTY, EMPTY_FACESET, NO_FACE_FOUND",
    ),
    (
        "INSUFFICIENT_PERMISSION, AUTHORIZATION_ERROR, TOO_MANY_FACE_ATTRIBUTES",
        "not available",
        "every key may use every parameter; no per-API permissions",
    ),
]


class FaceppError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def bad(name: str) -> FaceppError:
    return FaceppError(400, f"BAD_ARGUMENTS:{name}")


def missing(*names: str) -> FaceppError:
    return FaceppError(400, f"MISSING_ARGUMENTS: {', '.join(names)}")


def _request_id() -> str:
    return f"{int(time.time())},{uuid.uuid4()}"


def error_body(status: int, message: str, started: float | None = None) -> JSONResponse:
    used = round((time.monotonic() - started) * 1000) if started else 0
    return JSONResponse(
        {"time_used": used, "error_message": message, "request_id": _request_id()}, status_code=status
    )


def translate(code: ErrorCode, message: str, param: str | None = None) -> FaceppError:
    """A native error as Face++ reports it; `param` is the argument that carried the image."""
    where = f":{param}" if param else ""
    if code == ErrorCode.UNAUTHORIZED:
        return FaceppError(401, "AUTHENTICATION_ERROR")
    if code == ErrorCode.FORBIDDEN:
        return FaceppError(403, "AUTHORIZATION_ERROR:Denied by Admin")
    if code in (ErrorCode.IMAGE_TOO_LARGE, ErrorCode.URL_TOO_LARGE):
        return FaceppError(400, f"IMAGE_FILE_TOO_LARGE{where}")
    if code == ErrorCode.IMAGE_TOO_MANY_PIXELS:
        return FaceppError(400, f"INVALID_IMAGE_SIZE{where}")
    if code in (ErrorCode.EMPTY_IMAGE, ErrorCode.NOT_AN_IMAGE, ErrorCode.IMAGE_CORRUPT, ErrorCode.BAD_BASE64):
        return FaceppError(400, f"IMAGE_ERROR_UNSUPPORTED_FORMAT{where}")
    if code == ErrorCode.URL_TIMEOUT:
        return FaceppError(412, "IMAGE_DOWNLOAD_TIMEOUT")
    if code.name.startswith("URL_"):
        return FaceppError(400, "INVALID_IMAGE_URL")
    if code.name in RATE_LIMIT_NAMES:
        return FaceppError(403, "CONCURRENCY_LIMIT_EXCEEDED")
    if code == ErrorCode.INVALID_REQUEST:
        return FaceppError(400, "BAD_ARGUMENTS")
    log.warning("facepp: %s %s", code.name, message)
    return FaceppError(500, "INTERNAL_ERROR")


def error_response(code: ErrorCode, message: str) -> Response:
    """Errors raised outside a route (the body limit, an unknown method): Face++'s shapes."""
    if code == ErrorCode.IMAGE_TOO_LARGE:
        return PlainTextResponse("Request Entity Too Large", status_code=413)  # plain text, as Face++
    if code == ErrorCode.NOT_FOUND:
        return error_body(404, "API_NOT_FOUND")
    err = translate(code, message)
    return error_body(err.status, err.message)


# Arguments -----------------------------------------------------------------------------------------------


def text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise bad(name)
    return value.strip() if value is not None and value.strip() else None


def integer(form: FormData, name: str, choices: range, default: int) -> int:
    raw = text(form, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(name) from None
    if value not in choices:
        raise bad(name)
    return value


def parse_attributes(raw: str | None) -> list[str]:
    if raw is None or raw.lower() == "none":
        return []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if not names or any(n not in ATTRIBUTES for n in names):
        raise bad("return_attributes")
    return names


def parse_rectangle(raw: str | None) -> tuple[int, int, int, int] | None:
    """ "top,left,width,height" -> (x1, y1, x2, y2)."""
    if raw is None:
        return None
    try:
        top, left, width, height = (int(v) for v in raw.split(","))
    except ValueError:
        raise bad("face_rectangle") from None
    if min(top, left) < 0 or min(width, height) <= 0:
        raise bad("face_rectangle")
    return left, top, left + width, top + height


class ImageArg:
    """One image argument set (image_file / image_base64 / image_url, with an optional suffix "1"/"2"):
    the highest-precedence one given, its bytes checked against Face++'s limits."""

    def __init__(self, form: FormData, suffix: str = "") -> None:
        self.data: bytes | None = None
        self.url: str | None = None
        self.param = ""
        names = (f"image_file{suffix}", f"image_base64{'_' if suffix else ''}{suffix}", f"image_url{suffix}")
        self.names = names
        file = form.get(names[0])
        if isinstance(file, UploadFile):
            self.param = names[0]
        elif text(form, names[1]) is not None:
            self.param = names[1]
        elif text(form, names[2]) is not None:
            self.param, self.url = names[2], text(form, names[2])
        self._file = file if isinstance(file, UploadFile) else None
        self._base64 = text(form, names[1])

    @property
    def given(self) -> bool:
        return bool(self.param)

    async def load(self) -> None:
        try:
            if self._file is not None:
                self.data = await self._file.read(MAX_IMAGE_BYTES + 1)
            elif self.param == self.names[1]:
                self.data = decode_base64(self._base64, self.param)
        except FacequeueError as exc:
            raise translate(exc.code, exc.message, self.param) from exc
        if self.data is None:
            return
        if len(self.data) > MAX_IMAGE_BYTES:
            raise FaceppError(400, f"IMAGE_FILE_TOO_LARGE:{self.param}")
        settings = get_settings()
        try:
            _, width, height = sniff(self.data, settings.max_upload_bytes, settings.max_image_pixels)
        except FacequeueError as exc:
            raise translate(exc.code, exc.message, self.param) from exc
        if not (min(width, height) >= MIN_SIDE and max(width, height) <= MAX_SIDE):
            raise FaceppError(400, f"INVALID_IMAGE_SIZE:{self.param}")


async def read_form(request: Request) -> FormData:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ENTITY_LIMIT:
        raise FaceppError(413, "Request Entity Too Large")
    try:
        return await request.form()
    except Exception as exc:  # not a form body
        raise FaceppError(
            400, "BAD_ARGUMENTS:request body (send multipart or url-encoded form data)"
        ) from exc


def tenant_of(session: Session, request: Request, form: FormData) -> Tenant:
    key, secret = text(form, "api_key"), text(form, "api_secret")
    if key is None or secret is None:
        raise missing(*(n for n, v in (("api_key", key), ("api_secret", secret)) if v is None))
    try:
        return authenticate(session, request, key)
    except FacequeueError as exc:
        raise translate(exc.code, exc.message) from exc


# Faces and FaceSets --------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def live_face(session: Session, tenant: Tenant, token: str | None, name: str = "face_token") -> Face:
    """The face of a token, unless unknown, another tenant's, or expired (72 h and in no FaceSet)."""
    if token is None:
        raise missing(name)
    face = (
        session.execute(select(Face).where(Face.uid == token)).scalar_one_or_none()
        if is_uuid(token)
        else None
    )
    if face is None or face.tenant_id != tenant.id:
        raise FaceppError(400, "INVALID_FACE_TOKEN")
    if faceset_of(session, face) is None and _utc(face.image.created_at) < datetime.now(UTC) - TOKEN_LIFETIME:
        raise FaceppError(400, "INVALID_FACE_TOKEN")
    return face


def faceset_of(session: Session, face: Face) -> FaceppFaceSet | None:
    if face.person_id is None:
        return None
    return session.execute(
        select(FaceppFaceSet)
        .join(Person, Person.namespace_id == FaceppFaceSet.namespace_id)
        .where(Person.id == face.person_id)
    ).scalar_one_or_none()


def find_faceset(session: Session, tenant: Tenant, form: FormData) -> FaceppFaceSet:
    token, outer = text(form, "faceset_token"), text(form, "outer_id")
    if token is None and outer is None:
        raise missing("faceset_token", "outer_id")
    if token is not None and outer is not None:
        raise FaceppError(400, "COEXISTENCE_ARGUMENTS")
    where = FaceppFaceSet.token == token if token is not None else FaceppFaceSet.outer_id == outer
    found = session.execute(
        select(FaceppFaceSet).where(FaceppFaceSet.tenant_id == tenant.id, where)
    ).scalar_one_or_none()
    if found is None:
        raise FaceppError(400, "INVALID_FACESET_TOKEN" if token is not None else "INVALID_OUTER_ID")
    return found


def namespace_name(faceset: FaceppFaceSet) -> str:
    return NAMESPACE_PREFIX + faceset.token.replace("-", "")


def faceset_faces(session: Session, faceset: FaceppFaceSet) -> list[str]:
    return list(
        session.execute(
            select(Face.uid)
            .join(Person, Face.person_id == Person.id)
            .where(Person.namespace_id == faceset.namespace_id)
            .order_by(Face.id)
        ).scalars()
    )


def face_tokens(form: FormData, name: str = "face_tokens") -> list[str]:
    raw = text(form, name)
    if raw is None:
        raise missing(name)
    tokens = [t.strip() for t in raw.split(",") if t.strip()]
    if not 1 <= len(tokens) <= MAX_FACE_TOKENS:
        raise FaceppError(400, "INVALID_FACE_TOKENS_SIZE")
    return tokens


def add_faces(
    session: Session, tenant: Tenant, faceset: FaceppFaceSet, tokens: list[str]
) -> tuple[int, list]:
    added, failures = 0, []
    ns = namespace_name(faceset)
    for token in tokens:
        try:
            live_face(session, tenant, token)
        except FaceppError:
            failures.append({"reason": "INVALID_FACE_TOKEN", "face_token": token})
            continue
        set_person(session, tenant.id, [token], f"{token}@{ns}")
        added += 1
    session.flush()
    return added, failures


def faceset_summary(faceset: FaceppFaceSet) -> dict[str, Any]:
    return {
        "faceset_token": faceset.token,
        "outer_id": faceset.outer_id or "",
        "display_name": faceset.display_name,
        "tags": faceset.tags,
    }


# Answers -------------------------------------------------------------------------------------------------


def rectangle(face: Face) -> dict[str, int]:
    return {
        "top": round(face.y1),
        "left": round(face.x1),
        "width": round(face.x2 - face.x1),
        "height": round(face.y2 - face.y1),
    }


def _quality_threshold() -> float | None:
    """The recognition-quality level boundary "medium", when this build's calibration has one."""
    try:
        from workers.pipeline import attributes

        return float(attributes.quality_calibration()["recognition"]["levels"][0]) * 100  # type: ignore[attr-defined]
    except Exception:
        return None


def attributes_of(face: Face, wanted: list[str]) -> dict[str, Any]:
    """The requested attributes that the face's tags back; the others are left out."""
    tags = {tag["name"]: tag for tag in face.tags}
    out: dict[str, Any] = {}
    if "gender" in wanted and "gender" in tags:
        out["gender"] = {"value": "Female" if tags["gender"]["value"] == "female" else "Male"}
    if "age" in wanted and "age" in tags:
        out["age"] = {"value": round(float(tags["age"]["value"]))}
    if "smiling" in wanted and "smile" in tags:
        conf = float(tags["smile"]["confidence"])
        happy = conf if tags["smile"]["value"] == "yes" else 1 - conf
        out["smile"] = {"value": round(happy * 100, 3), "threshold": SMILE_HAPPY * 100}
    if "headpose" in wanted and {"yaw", "pitch", "roll"} <= tags.keys():
        out["headpose"] = {
            "pitch_angle": round(float(tags["pitch"]["value"]) - PITCH_FRONTAL, 6),
            "roll_angle": round(float(tags["roll"]["value"]), 6),
            "yaw_angle": round(float(tags["yaw"]["value"]), 6),
        }
    if "emotion" in wanted:
        found = {name: tags.get(f"emotion {label}") for name, label in EMOTIONS.items()}
        if all(found.values()):
            out["emotion"] = {n: round(float(t["confidence"]) * 100, 3) for n, t in found.items()}  # type: ignore[index]
    if "facequality" in wanted and "quality_for_recognition" in tags:
        quality: dict[str, Any] = {
            "value": round(float(tags["quality_for_recognition"]["confidence"]) * 100, 3)
        }
        threshold = _quality_threshold()
        if threshold is not None:
            quality["threshold"] = round(threshold, 3)
        out["facequality"] = quality
    return out


def landmark_of(face: Face, landmark_set: str) -> dict[str, dict[str, int]]:
    from workers.pipeline.landmark_sets import TABLES

    names = {name for name, _ in TABLES[landmark_set]}
    return {
        p["name"]: {"x": round(p["x"]), "y": round(p["y"])} for p in face.points if p.get("name") in names
    }


def face_answer(face: Face, landmark: int, wanted: list[str], analysed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"face_token": face.uid, "face_rectangle": rectangle(face)}
    if analysed and landmark and face.image.options.get("landmark_set") == LANDMARK_SETS[landmark]:
        out["landmark"] = landmark_of(face, LANDMARK_SETS[landmark])
    if analysed and wanted:
        out["attributes"] = attributes_of(face, wanted)
    return out


def _overlap(face: Face, box: tuple[int, int, int, int]) -> float:
    w = max(0.0, min(face.x2, box[2]) - max(face.x1, box[0]))
    h = max(0.0, min(face.y2, box[3]) - max(face.y1, box[1]))
    inter = w * h
    union = (face.x2 - face.x1) * (face.y2 - face.y1) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union if union > 0 else 0.0


def detect_faces(
    image: Image, landmark: int, wanted: list[str], calculate_all: bool, box: tuple[int, int, int, int] | None
) -> list[dict[str, Any]]:
    faces = sorted(image.faces, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1), reverse=True)
    if box is not None:
        best = max(faces, key=lambda f: _overlap(f, box), default=None)
        if best is None or _overlap(best, box) <= 0:
            return []
        out = face_answer(best, landmark, wanted, True)
        x1, y1, x2, y2 = box
        out["face_rectangle"] = {
            "top": y1,
            "left": x1,
            "width": x2 - x1,
            "height": y2 - y1,
        }  # "as you passed"
        return [out]
    return [face_answer(f, landmark, wanted, calculate_all or i < ANALYSED) for i, f in enumerate(faces)]


def thresholds() -> dict[str, float]:
    key = calibration_key(get_settings())
    return {
        name: round(float(calibration.confidence(key, calibration.threshold(key, fmr))) * 100, 3)
        for name, fmr in FMR_KEYS.items()
    }


# Jobs ----------------------------------------------------------------------------------------------------


async def run_image(
    session: Session, tenant_fn: Callable[[], Tenant], arg: ImageArg, flags: str, options: dict
) -> Image:
    """Create the image job for one image argument and wait for it; Face++ errors when it fails."""
    await arg.load()
    settings = get_settings()

    def create() -> Image:
        tenant = tenant_fn()
        try:
            url = validate_url(arg.url, settings, arg.param) if arg.data is None else None
            return create_image_job(
                session,
                settings,
                tenant,
                data=arg.data,
                url=url,
                detection_flags=flags,
                original_filename=arg.url or arg.param,
                options={**options, "facepp_request": str(uuid.uuid4())},  # new tokens on every call
            )
        except FacequeueError as exc:
            raise translate(exc.code, exc.message, arg.param) from exc

    image, finished = await create_and_wait(session, create)
    if not finished:
        raise FaceppError(403, "CONCURRENCY_LIMIT_EXCEEDED")
    if image.status == JobStatus.ERROR:
        raise translate(*wire.job_error(image), arg.param)
    if image.width and not (
        min(image.width, image.height) >= MIN_SIDE and max(image.width, image.height) <= MAX_SIDE
    ):
        raise FaceppError(400, f"INVALID_IMAGE_SIZE:{arg.param}")
    return image


async def run_recognition(
    session: Session, tenant: Tenant, query: str, targets: list[str], count: int
) -> list:
    def create() -> RecognizeJob:
        return create_recognize_job(session, tenant, [query], targets, f"max_results:{count}")

    job = await run_in_threadpool(create)
    if not await wait_finished(RecognizeJob, job.uid, get_settings().sync_wait_s):
        raise FaceppError(403, "CONCURRENCY_LIMIT_EXCEEDED")
    await run_in_threadpool(session.refresh, job)
    if job.status == JobStatus.ERROR:
        raise translate(*wire.job_error(job))
    return job.result["results"][0]["matches"] if job.result else []


async def query_face(
    session: Session, tenant: Tenant, request: Request, form: FormData, suffix: str = ""
) -> tuple[Face, Image | None]:
    """face_token (highest precedence) or an image, whose largest face is used."""
    token = text(form, f"face_token{suffix}")
    if token is not None:
        return await run_in_threadpool(live_face, session, tenant, token, f"face_token{suffix}"), None
    arg = ImageArg(form, suffix)
    if not arg.given:
        raise missing(f"face_token{suffix}", *arg.names)
    image = await run_image(session, lambda: tenant, arg, "basic", {})
    faces = sorted(image.faces, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1), reverse=True)
    if not faces:
        raise FaceppError(400, f"NO_FACE_FOUND:{arg.param}")
    return faces[0], image


# Routes --------------------------------------------------------------------------------------------------

Handler = Callable[[Request, Session, FormData, float], Any]
_IMAGE = {
    "image_file": "the image (highest precedence)",
    "image_base64": "the image, base64",
    "image_url": "URL of the image (lowest precedence)",
}
_FACESET = {
    "faceset_token": "the FaceSet (or outer_id)",
    "outer_id": "the FaceSet's own id (or faceset_token)",
}
_ANALYSIS = {"return_landmark": "0, 1 (83 points) or 2 (106 points)", "return_attributes": "none or a list"}
FORM_FIELDS: dict[str, dict[str, str]] = {
    "/detect": {
        **_IMAGE,
        **_ANALYSIS,
        "calculate_all": "1: landmarks and attributes for every face, not only the 5 largest",
        "face_rectangle": "top,left,width,height",
    },
    "/compare": {
        "face_token1": "first face (or an image: image_file1, image_base64_1, image_url1)",
        "face_token2": "second face (or an image: image_file2, image_base64_2, image_url2)",
    },
    "/search": {"face_token": "the face (or an image)", **_IMAGE, **_FACESET, "return_result_count": "1-5"},
    "/faceset/create": {
        "outer_id": "your id",
        "display_name": "name",
        "user_data": "your data",
        "tags": "comma-separated",
        "face_tokens": "up to 5",
        "force_merge": "1: add to an existing outer_id",
    },
    "/faceset/addface": {**_FACESET, "face_tokens": "up to 5"},
    "/faceset/removeface": {**_FACESET, "face_tokens": "up to 5, or RemoveAllFaceTokens"},
    "/faceset/update": {
        **_FACESET,
        "new_outer_id": "",
        "display_name": "",
        "user_data": "",
        "tags": "",
    },
    "/faceset/getdetail": {**_FACESET, "start": "1-based position of the first face_token"},
    "/faceset/getfacesets": {"tags": "only FaceSets with all these tags", "start": "1-based position"},
    "/faceset/delete": {**_FACESET, "check_empty": "1 (default): refuse a FaceSet that has faces"},
    "/face/analyze": {"face_tokens": "up to 5", **_ANALYSIS},
    "/face/getdetail": {"face_token": ""},
    "/face/setuserid": {"face_token": "", "user_id": "your id for the face"},
}


def form_schema(path: str) -> dict[str, Any]:
    fields = {"api_key": "an API key", "api_secret": "required, not checked", **FORM_FIELDS.get(path, {})}
    schema = {
        "type": "object",
        "required": ["api_key", "api_secret"],
        "properties": {
            name: {"type": "string", "description": how, **({"format": "binary"} if "file" in name else {})}
            for name, how in fields.items()
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


def facepp_route(path: str, summary: str) -> Callable[[Handler], Handler]:
    """POST route that reads the form, answers with request_id/time_used added, and maps every error."""

    def register(handler: Handler) -> Handler:
        @router.post(
            path,
            summary=f"Face++ {summary} (drop-in)",
            name=f"facepp_{path.strip('/').replace('/', '_')}",
            openapi_extra=form_schema(path),
        )
        async def route(request: Request, session: Db) -> Response:
            started = time.monotonic()
            try:
                form = await read_form(request)
                body = await handler(request, session, form, started)
                await run_in_threadpool(session.commit)
                return JSONResponse(
                    {
                        "request_id": _request_id(),
                        "time_used": round((time.monotonic() - started) * 1000),
                        **body,
                    }
                )
            except FaceppError as exc:
                await run_in_threadpool(session.rollback)
                if exc.status == 413:
                    return PlainTextResponse(exc.message, status_code=413)
                return error_body(exc.status, exc.message, started)
            except FacequeueError as exc:
                await run_in_threadpool(session.rollback)
                err = translate(exc.code, exc.message)
                return error_body(err.status, err.message, started)
            except Exception:
                log.exception("facepp %s failed", path)
                await run_in_threadpool(session.rollback)
                return error_body(500, "INTERNAL_ERROR", started)

        return handler

    return register


@facepp_route("/detect", "detect")
async def detect(request: Request, session: Db, form: FormData, started: float) -> dict:
    tenant = await run_in_threadpool(tenant_of, session, request, form)
    arg = ImageArg(form)
    if not arg.given:
        raise missing("image_url", "image_file", "image_base64")
    landmark = integer(form, "return_landmark", range(3), 0)
    wanted = parse_attributes(text(form, "return_attributes"))
    calculate_all = bool(integer(form, "calculate_all", range(2), 0))
    box = parse_rectangle(text(form, "face_rectangle"))
    # Always the attributes and a landmark set (106 unless 83 asked for): face/analyze answers from them.
    options = {"landmark_set": LANDMARK_SETS[landmark or 2]}
    image = await run_image(session, lambda: tenant, arg, "propoints,classifiers", options)
    faces = await run_in_threadpool(detect_faces, image, landmark, wanted, calculate_all, box)
    return {"image_id": image.uid, "faces": faces}


@facepp_route("/compare", "compare")
async def compare(request: Request, session: Db, form: FormData, started: float) -> dict:
    tenant = await run_in_threadpool(tenant_of, session, request, form)
    (face1, image1), (face2, image2) = [await query_face(session, tenant, request, form, s) for s in "12"]
    if face1.uid == face2.uid:
        key = calibration_key(get_settings())
        confidence = float(calibration.confidence(key, calibration.identical_distance(key)))
    else:
        matches = await run_recognition(session, tenant, face1.uid, [face2.uid], 1)
        confidence = matches[0]["confidence"] if matches else 0.0
    body: dict[str, Any] = {"confidence": round(confidence * 100, 3), "thresholds": thresholds()}
    for n, (_face, image) in enumerate(((face1, image1), (face2, image2)), start=1):
        if image is not None:
            body[f"image_id{n}"] = image.uid
            body[f"faces{n}"] = [{"face_token": f.uid, "face_rectangle": rectangle(f)} for f in image.faces]
    return body


@facepp_route("/search", "search")
async def search(request: Request, session: Db, form: FormData, started: float) -> dict:
    tenant = await run_in_threadpool(tenant_of, session, request, form)
    faceset = await run_in_threadpool(find_faceset, session, tenant, form)
    count = integer(form, "return_result_count", range(1, 6), 1)
    face, image = await query_face(session, tenant, request, form)
    if not await run_in_threadpool(faceset_faces, session, faceset):
        raise FaceppError(400, "EMPTY_FACESET")
    matches = await run_recognition(session, tenant, face.uid, [f"all@{namespace_name(faceset)}"], count)

    def results() -> list[dict]:
        users = dict(
            session.execute(
                select(FaceppUserId.face_uid, FaceppUserId.user_id).where(
                    FaceppUserId.face_uid.in_([m["face_uuid"] for m in matches])
                )
            ).all()
        )
        return [
            {
                "face_token": m["face_uuid"],
                "confidence": round(m["confidence"] * 100, 3),
                "user_id": users.get(m["face_uuid"], ""),
            }
            for m in matches
        ]

    body: dict[str, Any] = {"results": await run_in_threadpool(results), "thresholds": thresholds()}
    if image is not None:
        body["image_id"] = image.uid
        body["faces"] = [{"face_token": f.uid, "face_rectangle": rectangle(f)} for f in image.faces]
    return body


def _sync(fn: Callable[[Request, Session, FormData], dict]) -> Handler:
    """A handler that only touches the database, run in a worker thread."""

    async def handler(request: Request, session: Db, form: FormData, started: float) -> dict:
        return await run_in_threadpool(fn, request, session, form)

    return handler


def _metadata(form: FormData, faceset: FaceppFaceSet, outer_name: str) -> None:
    for field, limit in (("display_name", 256), ("user_data", 16384), ("tags", 255)):
        value = text(form, field)
        if value is not None:
            if len(value) > limit:
                raise bad(field)
            setattr(faceset, field, value)
    outer = text(form, outer_name)
    if outer is not None:
        if len(outer) > 255:
            raise bad(outer_name)
        faceset.outer_id = outer


def faceset_create(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    outer = text(form, "outer_id")
    existing = None
    if outer is not None:
        existing = session.execute(
            select(FaceppFaceSet).where(FaceppFaceSet.tenant_id == tenant.id, FaceppFaceSet.outer_id == outer)
        ).scalar_one_or_none()
        if existing is not None and integer(form, "force_merge", range(2), 0) == 0:
            raise FaceppError(400, "FACESET_EXIST")
    faceset = existing
    if faceset is None:
        faceset = FaceppFaceSet(
            tenant_id=tenant.id, token=str(uuid.uuid4()), display_name="", user_data="", tags=""
        )
        namespace = Namespace(tenant_id=tenant.id, name=namespace_name(faceset))
        session.add(namespace)
        session.flush()
        faceset.namespace_id = namespace.id
        session.add(faceset)
        _metadata(form, faceset, "outer_id")
        session.flush()
    added, failures = 0, []
    if text(form, "face_tokens") is not None:
        added, failures = add_faces(session, tenant, faceset, face_tokens(form))
    return {
        "faceset_token": faceset.token,
        "outer_id": faceset.outer_id or "",
        "face_added": added,
        "face_count": len(faceset_faces(session, faceset)),
        "failure_detail": failures,
    }


def faceset_addface(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    faceset = find_faceset(session, tenant, form)
    added, failures = add_faces(session, tenant, faceset, face_tokens(form))
    return {
        "faceset_token": faceset.token,
        "outer_id": faceset.outer_id or "",
        "face_added": added,
        "face_count": len(faceset_faces(session, faceset)),
        "failure_detail": failures,
    }


def faceset_removeface(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    faceset = find_faceset(session, tenant, form)
    current = faceset_faces(session, faceset)
    raw = text(form, "face_tokens")
    tokens = current if raw == "RemoveAllFaceTokens" else face_tokens(form)
    removed, failures = 0, []
    for token in tokens:
        if token not in current:
            failures.append({"reason": "FACE_NOT_IN_FACESET", "face_token": token})
            continue
        set_person(session, tenant.id, [token], "")
        removed += 1
    session.execute(  # the per-face persons go with their faces
        delete(Person).where(
            Person.namespace_id == faceset.namespace_id,
            Person.name.in_(tokens),
            ~select(Face.id).where(Face.person_id == Person.id).exists(),
        )
    )
    session.flush()
    return {
        "faceset_token": faceset.token,
        "outer_id": faceset.outer_id or "",
        "face_removed": removed,
        "face_count": len(faceset_faces(session, faceset)),
        "failure_detail": failures,
    }


def faceset_update(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    faceset = find_faceset(session, tenant, form)
    if all(text(form, f) is None for f in ("new_outer_id", "display_name", "user_data", "tags")):
        raise missing("new_outer_id", "display_name", "user_data", "tags")
    new_outer = text(form, "new_outer_id")
    if new_outer is not None and new_outer != faceset.outer_id:
        taken = session.execute(
            select(func.count()).where(
                FaceppFaceSet.tenant_id == tenant.id, FaceppFaceSet.outer_id == new_outer
            )
        ).scalar_one()
        if taken:
            raise FaceppError(400, "FACESET_EXIST")
    _metadata(form, faceset, "new_outer_id")
    session.flush()
    return {"faceset_token": faceset.token, "outer_id": faceset.outer_id or ""}


def faceset_getdetail(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    faceset = find_faceset(session, tenant, form)
    start = integer(form, "start", range(1, 10_001), 1)
    faces = faceset_faces(session, faceset)
    page = faces[start - 1 : start - 1 + 100]
    body = {
        **faceset_summary(faceset),
        "user_data": faceset.user_data,
        "face_count": len(faces),
        "face_tokens": page,
    }
    if start - 1 + 100 < len(faces):
        body["next"] = str(start + 100)
    return body


def faceset_getfacesets(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    start = integer(form, "start", range(1, 10_001), 1)
    wanted = {t for t in (text(form, "tags") or "").split(",") if t}
    rows = session.execute(
        select(FaceppFaceSet).where(FaceppFaceSet.tenant_id == tenant.id).order_by(FaceppFaceSet.created_at)
    ).scalars()
    sets = [s for s in rows if not wanted or wanted <= set(s.tags.split(","))]
    body: dict[str, Any] = {"facesets": [faceset_summary(s) for s in sets[start - 1 : start - 1 + 100]]}
    if start - 1 + 100 < len(sets):
        body["next"] = str(start + 100)
    return body


def faceset_delete(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    faceset = find_faceset(session, tenant, form)
    if integer(form, "check_empty", range(2), 1) and faceset_faces(session, faceset):
        raise FaceppError(400, "FACESET_NOT_EMPTY")
    answer = {"faceset_token": faceset.token, "outer_id": faceset.outer_id or ""}
    delete_namespace(session, tenant.id, namespace_name(faceset), False)  # faces stay (as on Face++)
    session.execute(delete(FaceppFaceSet).where(FaceppFaceSet.token == faceset.token))
    return answer


def face_getdetail(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    face = live_face(session, tenant, text(form, "face_token"))
    faceset = faceset_of(session, face)
    user = session.get(FaceppUserId, face.uid)
    return {
        "image_id": face.image_uid,
        "face_token": face.uid,
        "user_id": user.user_id if user else "",
        "face_rectangle": rectangle(face),
        "facesets": [faceset_summary(faceset)] if faceset else [],
    }


def face_setuserid(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    face = live_face(session, tenant, text(form, "face_token"))
    user_id = text(form, "user_id")
    if user_id is None:
        raise missing("user_id")
    if len(user_id) > 255:
        raise bad("user_id")
    row = session.get(FaceppUserId, face.uid)
    if row is None:
        session.add(FaceppUserId(face_uid=face.uid, user_id=user_id))
    else:
        row.user_id = user_id
    session.flush()
    return {"face_token": face.uid, "user_id": user_id}


def face_analyze(request: Request, session: Session, form: FormData) -> dict:
    tenant = tenant_of(session, request, form)
    tokens = face_tokens(form)
    landmark = integer(form, "return_landmark", range(3), 0)
    wanted = parse_attributes(text(form, "return_attributes"))
    faces = [live_face(session, tenant, t) for t in tokens]
    return {"faces": [face_answer(f, landmark, wanted, True) for f in faces]}


for _path, _summary, _fn in (
    ("/faceset/create", "FaceSet create", faceset_create),
    ("/faceset/addface", "FaceSet add face", faceset_addface),
    ("/faceset/removeface", "FaceSet remove face", faceset_removeface),
    ("/faceset/update", "FaceSet update", faceset_update),
    ("/faceset/getdetail", "FaceSet detail", faceset_getdetail),
    ("/faceset/getfacesets", "FaceSet list", faceset_getfacesets),
    ("/faceset/delete", "FaceSet delete", faceset_delete),
    ("/face/getdetail", "face detail", face_getdetail),
    ("/face/setuserid", "face set user id", face_setuserid),
    ("/face/analyze", "face analyze", face_analyze),
):
    facepp_route(_path, _summary)(_sync(_fn))


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
async def not_found(rest: str) -> Response:
    return error_body(404, "API_NOT_FOUND")
