"""Azure Face v1.0 drop-in: /face/v1.0/… (reference/azure-face-api-v1.txt), for the official clients.

A mapping only. `Ocp-Apim-Subscription-Key` is an API key. Detection is an ordinary image job waited for on
the queue (api/wait.py); verify / identify / findsimilars / group are ordinary recognition jobs, waited for
the same way. A faceId is a face uid; a person group is the namespace `pg <personGroupId>` whose persons are
named by their personId; a face list is the namespace `fl <faceListId>` with one person per persisted face.
Azure's names and userData live in `azure_entries`. Training is immediate (each worker's vector index catches
up by itself), so a trained group reports `succeeded` at once.

Each detect is a new job with new faceIds; they expire 24 h after the detect unless the face was persisted,
and the workers' reaper then erases them (schema/erase.purge_expired_tokens).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Db, authenticate
from api.recognition import create_recognize_job
from api.uploads import create_image_job, validate_url
from api.wait import create_and_wait, wait_finished
from facequeue.settings import get_settings
from schema import wire
from schema.erase import EXPIRING, delete_faces, delete_namespace, delete_persons
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.inputs import check_json
from schema.persons import PersonId, namespace_id, set_person
from schema.tables import AzureEntry, Face, Image, Namespace, Person, RecognizeJob, Tenant, utcnow
from workers.pipeline.landmark_sets import AZURE27
from workers.pipeline.quality_checks import PITCH_FRONTAL
from workers.recognition import calibration
from workers.recognize import calibration_key

log = logging.getLogger(__name__)
PREFIX = "/face/v1.0"
MIN_BYTES, MAX_BYTES = 1024, 6 * 1024 * 1024  # Azure's documented file size range
ID_RE = re.compile(r"^[a-z0-9_-]{1,57}$")  # Azure allows 64; our namespace names hold 60 with "pg "
RECOGNITION_MODELS = ("recognition_01", "recognition_02", "recognition_03", "recognition_04")
DETECTION_MODELS = ("detection_01", "detection_02", "detection_03")
ATTRIBUTES = [
    "age",
    "gender",
    "headPose",
    "smile",
    "facialHair",
    "glasses",
    "emotion",
    "hair",
    "makeup",
    "occlusion",
    "accessories",
    "blur",
    "exposure",
    "noise",
]
# Azure emotion → the emotion model's class (tags `emotion <class>`); contempt has no class.
EMOTIONS = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprise": "surprise",
}
LANDMARK_NAMES = [name for name, _ in AZURE27]
DENIED = (
    "Access denied due to invalid subscription key. Make sure you are subscribed to an API you are trying "
    "to call and provide the right key."
)

# (vendor field, status, how) for the README's compatibility table (tests check the README against it).
FIELDS = [
    ("Ocp-Apim-Subscription-Key", "mapped", "an API key"),
    ("detect: JSON {url} / application/octet-stream", "supported", "1 KB - 6 MB as documented"),
    ("detect: returnFaceId, faceId", "mapped", "the face uid; expires (and is erased) after 24 h"),
    (
        "detect: recognitionModel, detectionModel, returnRecognitionModel",
        "mapped",
        "accepted and echoed; one model",
    ),
    ("detect: faceRectangle", "supported", "detector box, largest first, at most 100"),
    ("detect: faceLandmarks (27)", "supported", "mesh and iris points (landmark set azure27)"),
    ("faceAttributes.age, gender", "supported", "age and gender models"),
    ("faceAttributes.headPose", "mapped", "mesh head pose in degrees; pitch 0 = frontal"),
    ("faceAttributes.smile", "mapped", "the emotion model's happy probability"),
    (
        "faceAttributes.emotion",
        "mapped",
        "emotion model probabilities for seven classes (needs `emotion <class>` tags); contempt omitted",
    ),
    ("faceAttributes.blur.blurLevel, noise.noiseLevel", "supported", "measured levels Low / Medium / High"),
    ("faceAttributes.blur.value", "supported", "no-reference blur effect, 0 sharp .. 1 blurred"),
    ("faceAttributes.noise.value", "not available", "our noise measure is a sigma in grey levels, not 0-1"),
    ("faceAttributes.exposure", "supported", "level and mean luminance 0-1 of the face region"),
    (
        "faceAttributes.qualityForRecognition",
        "supported",
        "low / medium / high (needs the `quality_for_recognition` tag)",
    ),
    ("faceAttributes.facialHair, glasses, hair, makeup, accessories", "not available", "no model; omitted"),
    ("faceAttributes.occlusion", "not available", "nothing measures occlusion yet; omitted"),
    ("verify (face-to-face, face-to-person)", "supported", "calibrated confidence; isIdentical at the FMR"),
    ("identify", "supported", "candidates: matches at the FMR, or confidence >= confidenceThreshold"),
    ("findsimilars (faceIds, faceListId; matchPerson, matchFace)", "supported", "recognition job"),
    ("group", "supported", "faces linked by matches at the FMR; singletons in messyGroup"),
    (
        "persongroups (PUT, GET, PATCH, DELETE, list)",
        "mapped",
        "namespaces `pg <id>`; ids up to 57 characters",
    ),
    ("persongroups/{id}/persons (+ persistedFaces)", "mapped", "persons named by personId; faces enrolled"),
    (
        "persongroups/{id}/train, training",
        "mapped",
        "immediate: nonstarted before train, then succeeded (the index catches up by itself)",
    ),
    ("facelists (+ persistedFaces)", "mapped", "namespaces `fl <id>`, one person per face"),
    ("largepersongroups, largefacelists, snapshots", "not available", "answer 404"),
    ("error BadArgument, InvalidImage, InvalidImageSize, InvalidURL (400)", "supported", "as documented"),
    ("error Unspecified (401), OperationTimeOut (408), 415, 429", "supported", "408 when the wait runs out"),
    ("error 403 (quota)", "not available", "a self-hosted service has no quota"),
    (
        "error PersonGroupNotFound, PersonNotFound, FaceNotFound, FaceListNotFound, PersistedFaceNotFound",
        "supported",
        "404",
    ),
    ("error PersonGroupExists, FaceListExists (409), PersonGroupNotTrained", "supported", "as Azure"),
]


class AzureError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    if status in (403, 429):  # Azure's gateway errors carry statusCode, not code
        return JSONResponse({"error": {"statusCode": status, "message": message}}, status_code=status)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def from_native(code: ErrorCode, message: str) -> AzureError:
    if code == ErrorCode.UNAUTHORIZED:
        return AzureError(401, "Unspecified", DENIED)
    if code.name.startswith("URL_"):
        return AzureError(400, "InvalidURL", f"Failed to download image from the specified URL: {message}")
    if code in (ErrorCode.EMPTY_IMAGE,):
        return AzureError(400, "InvalidImageSize", "Image size is too small.")
    if code == ErrorCode.IMAGE_TOO_LARGE:
        return AzureError(400, "InvalidImageSize", "Image size is too big.")
    if code in (ErrorCode.NOT_AN_IMAGE, ErrorCode.IMAGE_CORRUPT, ErrorCode.IMAGE_TOO_MANY_PIXELS):
        return AzureError(400, "InvalidImage", f"Decoding error, image format unsupported. ({message})")
    if code.name in ("RATE_LIMITED", "TOO_MANY_QUEUED", "SERVICE_UNAVAILABLE"):
        return AzureError(429, "RateLimitExceeded", message)
    if code.http_status < 500:
        return AzureError(400, "BadArgument", message)
    return AzureError(500, "InternalServerError", message)


class AzureRoute(APIRoute):
    """Every failure of these routes, validation included, in Azure's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except AzureError as exc:
                return error_response(exc.status, exc.code, exc.message)
            except FacequeueError as exc:
                err = from_native(exc.code, exc.message)
                return error_response(err.status, err.code, err.message)
            except RequestValidationError as exc:
                return error_response(400, "BadArgument", f"Invalid argument: {exc.errors()[:1]}")
            except Exception:
                log.exception("azure %s failed", request.url.path)
                return error_response(500, "InternalServerError", "internal error")

        return handler


GroupIdP = Annotated[str, PathParam(alias="personGroupId")]
PersonIdP = Annotated[str, PathParam(alias="personId")]
FaceIdP = Annotated[str, PathParam(alias="persistedFaceId")]
ListIdP = Annotated[str, PathParam(alias="faceListId")]


def _body(schema: dict, image: bool = False) -> dict:
    """OpenAPI request body of a route that reads its body itself (Azure's errors, not FastAPI's)."""
    content = {"application/json": {"schema": schema}}
    if image:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def _object(**properties: str) -> dict:
    types = {
        "s": {"type": "string"},
        "ids": {"type": "array", "items": {"type": "string"}},
        "n": {"type": "number"},
    }
    return {"type": "object", "properties": {k: types[v] for k, v in properties.items()}}


IMAGE_BODY = _body(_object(url="s"), image=True)
META_BODY = _body(_object(name="s", userData="s", recognitionModel="s"))
router = APIRouter(prefix=PREFIX, tags=["vendor: Azure Face v1.0"], route_class=AzureRoute)


# request helpers ---------------------------------------------------------------------------------------


def tenant_of(session: Session, request: Request) -> Tenant:
    return authenticate(session, request, request.headers.get("ocp-apim-subscription-key"))


def flag(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise AzureError(400, "BadArgument", f"Invalid argument {name}.")
    return value.lower() == "true"


def choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query_params.get(name) or default
    if value not in allowed:
        raise AzureError(400, "BadArgument", f"'{name}' is invalid.")
    return value


async def json_body(request: Request) -> dict[str, Any]:
    if "json" not in request.headers.get("content-type", ""):
        raise AzureError(415, "BadArgument", "Invalid Media Type.")
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise AzureError(400, "BadArgument", "JSON parsing error.") from exc
    if not isinstance(body, dict):
        raise AzureError(400, "BadArgument", "Request body is invalid.")
    return check_json(body)  # schema.inputs: no control characters or lone surrogates in any string


async def image_body(request: Request) -> tuple[bytes | None, str | None]:
    """(bytes, None) for application/octet-stream, (None, url) for JSON {url}."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/octet-stream"):
        data = await request.body()
        if len(data) < MIN_BYTES:
            raise AzureError(
                400,
                "InvalidImageSize",
                "Image size is too small. The valid image file size should be larger than or equal to 1KB.",
            )
        if len(data) > min(MAX_BYTES, get_settings().max_upload_bytes):
            raise AzureError(
                400,
                "InvalidImageSize",
                "Image size is too big. The valid image file size should be no larger than 6MB.",
            )
        return data, None
    url = (await json_body(request)).get("url")
    if not isinstance(url, str) or not url:
        raise AzureError(400, "BadArgument", "Request body is invalid.")
    try:
        return None, validate_url(url, get_settings(), "url")
    except FacequeueError as exc:
        raise AzureError(400, "InvalidURL", f"Invalid image URL: {exc.message}") from exc


def strings(body: dict, name: str, required: bool = True) -> list[str]:
    value = body.get(name)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise AzureError(400, "BadArgument", f"'{name}' must be a non-empty array of ids.")
    return value


def check_id(value: str, what: str) -> str:
    if not ID_RE.match(value):
        raise AzureError(
            400, "BadArgument", f"{what} is invalid: lowercase letters, digits, '-' and '_', 1-57 characters."
        )
    return value


# stored entries ----------------------------------------------------------------------------------------


def entry(session: Session, tenant: Tenant, kind: str, key: str) -> AzureEntry | None:
    return session.get(AzureEntry, (tenant.id, kind, key))


def put_entry(session: Session, tenant: Tenant, kind: str, key: str, data: dict) -> None:
    row = entry(session, tenant, kind, key)
    if row is None:
        session.add(AzureEntry(tenant_id=tenant.id, kind=kind, key=key, data=data))
    else:
        row.data = {**row.data, **data}


def group_ns(session: Session, tenant: Tenant, group: str, kind: str = "group") -> tuple[AzureEntry, int]:
    row = entry(session, tenant, kind, group)
    ns = namespace_id(session, tenant.id, namespace_name(kind, group), create=False) if row else None
    if row is None or ns is None:
        name = "PersonGroup" if kind == "group" else "FaceList"
        raise AzureError(404, f"{name}NotFound", f"{name} '{group}' is not found.")
    return row, ns


def namespace_name(kind: str, key: str) -> str:
    return ("pg " if kind == "group" else "fl ") + key


def person_row(session: Session, tenant: Tenant, group: str, person_id: str) -> Person:
    _, ns = group_ns(session, tenant, group)
    person = session.execute(
        select(Person).where(Person.namespace_id == ns, Person.name == person_id)
    ).scalar_one_or_none()
    if person is None:
        raise AzureError(404, "PersonNotFound", f"Person '{person_id}' is not found.")
    return person


def face_ids_of(session: Session, person_row_id: int) -> list[str]:
    return list(session.execute(select(Face.uid).where(Face.person_id == person_row_id)).scalars())


def face_id_expired(image: Image, now: datetime) -> bool:
    """A detect's faceIds live 24 h (schema/erase.EXPIRING; the reaper then erases them)."""
    if "azure_request" not in (image.options or {}):
        return False
    created = image.created_at if image.created_at.tzinfo else image.created_at.replace(tzinfo=UTC)
    return now >= created + EXPIRING["azure_request"]


def query_faces(session: Session, tenant: Tenant, face_ids: list[str]) -> list[Face]:
    """Faces usable as queries: the tenant's, not expired. Else 404 FaceNotFound."""
    faces = {
        f.uid: f
        for f in session.execute(
            select(Face).where(Face.uid.in_(face_ids), Face.tenant_id == tenant.id)
        ).scalars()
    }
    now = utcnow()
    for face_id in face_ids:
        face = faces.get(face_id)
        if face is None or (face.person_id is None and face_id_expired(face.image, now)):
            raise AzureError(404, "FaceNotFound", f"Face '{face_id}' is not found or has expired.")
    return [faces[f] for f in face_ids]


# jobs ---------------------------------------------------------------------------------------------------


async def run_recognition(
    session: Session, request: Request, faces: list[str], targets: list[str], max_results: int = 1000
) -> tuple[Tenant, dict]:
    def create() -> tuple[Tenant, RecognizeJob]:
        tenant = tenant_of(session, request)
        query_faces(session, tenant, faces)
        parameters = f"max_results:{max(1, min(max_results, 1000))}"
        return tenant, create_recognize_job(session, tenant, faces, targets, parameters)

    tenant, job = await run_in_threadpool(create)
    if not await wait_finished(RecognizeJob, job.uid, get_settings().sync_wait_s):
        raise AzureError(408, "OperationTimeOut", "Request Timeout.")
    await run_in_threadpool(session.refresh, job)
    if job.status == JobStatus.ERROR:
        raise from_native(*wire.job_error(job))
    return tenant, job.result


async def detect_image(session: Session, request: Request, flags: str, options: dict) -> tuple[Tenant, Image]:
    data, url = await image_body(request)
    settings = get_settings()
    holder: dict[str, Tenant] = {}

    def create() -> Image:
        holder["tenant"] = tenant = tenant_of(session, request)
        return create_image_job(
            session,
            settings,
            tenant,
            data=data,
            url=url,
            detection_flags=flags,
            options=options,
            original_filename=url or "azure",
        )

    image, finished = await create_and_wait(session, create)
    if not finished:
        raise AzureError(408, "OperationTimeOut", "Request Timeout.")
    if image.status == JobStatus.ERROR:
        raise from_native(*wire.job_error(image))
    return holder["tenant"], image


def one_face(image: Image, target: str | None) -> Face:
    """The face to persist: the only one, or the one whose box best overlaps `targetFace`."""
    faces = list(image.faces)
    if not faces:
        raise AzureError(
            400, "InvalidImage", "No face detected in the image or in the specified targetFace area."
        )
    if target:
        try:
            left, top, width, height = (float(v) for v in target.split(","))
        except ValueError as exc:
            raise AzureError(400, "BadArgument", "Invalid argument targetFace.") from exc

        def overlap(f: Face) -> float:
            w = min(f.x2, left + width) - max(f.x1, left)
            h = min(f.y2, top + height) - max(f.y1, top)
            return max(0.0, w) * max(0.0, h)

        best = max(faces, key=overlap)
        if overlap(best) <= 0:
            raise AzureError(400, "InvalidImage", "No face detected in the specified targetFace area.")
        return best
    if len(faces) > 1:
        raise AzureError(400, "InvalidImage", "There is more than 1 face in the image.")
    return faces[0]


# detect ---------------------------------------------------------------------------------------------------


def _tags(face: Face) -> dict[str, dict]:
    return {tag["name"]: tag for tag in face.tags}


def _level(value: str) -> str:
    return value[:1].upper() + value[1:]


def attributes(face: Face, wanted: list[str]) -> dict[str, Any]:
    """The wanted attributes a model backs; the others are left out, never invented."""
    tags = _tags(face)
    out: dict[str, Any] = {}
    if "age" in wanted and "age" in tags:
        out["age"] = float(tags["age"]["value"])
    if "gender" in wanted and "gender" in tags:
        out["gender"] = tags["gender"]["value"]
    if "smile" in wanted and "smile" in tags:
        smile = float(tags["smile"]["confidence"])
        out["smile"] = round(smile if tags["smile"]["value"] == "yes" else 1 - smile, 3)
    if "headPose" in wanted and {"yaw", "pitch", "roll"} <= tags.keys():
        out["headPose"] = {
            "roll": float(tags["roll"]["value"]),
            "yaw": float(tags["yaw"]["value"]),
            "pitch": round(float(tags["pitch"]["value"]) - PITCH_FRONTAL, 1),
        }
    emotions = {name: tags.get(f"emotion {label}") for name, label in EMOTIONS.items()}
    if "emotion" in wanted and all(emotions.values()):
        out["emotion"] = {name: float(tag["confidence"]) for name, tag in emotions.items()}
    if "blur" in wanted and "blur" in tags:
        out["blur"] = {"blurLevel": _level(tags["blur"]["value"])}
        if "blur value" in tags:  # Crete blur effect: 0 sharp .. 1 blurred, Azure's scale
            out["blur"]["value"] = float(tags["blur value"]["value"])
    if "exposure" in wanted and "exposure" in tags:
        out["exposure"] = {"exposureLevel": _level(tags["exposure"]["value"])}
        if "exposure value" in tags:
            out["exposure"]["value"] = float(tags["exposure value"]["value"])
    if "noise" in wanted and "noise" in tags:
        out["noise"] = {"noiseLevel": _level(tags["noise"]["value"])}
    if "quality_for_recognition" in tags and wanted:
        out["qualityForRecognition"] = tags["quality_for_recognition"]["value"]
    return out


def face_entry(face: Face, want: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if want["faceId"]:
        out["faceId"] = face.uid
    if want["returnRecognitionModel"]:
        out["recognitionModel"] = want["recognitionModel"]
    out["faceRectangle"] = {
        "width": round(face.x2 - face.x1),
        "height": round(face.y2 - face.y1),
        "left": round(face.x1),
        "top": round(face.y1),
    }
    if want["landmarks"]:
        points = {p.get("name"): p for p in face.points}
        out["faceLandmarks"] = {
            name: {"x": round(points[name]["x"], 1), "y": round(points[name]["y"], 1)}
            for name in LANDMARK_NAMES
            if name in points
        }
    if want["attributes"]:
        out["faceAttributes"] = attributes(face, want["attributes"])
    return out


def parse_attributes(raw: str | None) -> list[str]:
    wanted = [a.strip() for a in (raw or "").split(",") if a.strip()]
    if any(a not in ATTRIBUTES for a in wanted):
        raise AzureError(
            400,
            "BadArgument",
            "Invalid argument returnFaceAttributes. Supported values are: "
            + ", ".join(ATTRIBUTES)
            + " in a comma-separated format.",
        )
    return wanted


@router.post("/detect", summary="Azure Face detect (drop-in)", openapi_extra=IMAGE_BODY)
async def detect(request: Request, session: Db) -> JSONResponse:
    want = {
        "faceId": flag(request, "returnFaceId", True),
        "landmarks": flag(request, "returnFaceLandmarks", False),
        "attributes": parse_attributes(request.query_params.get("returnFaceAttributes")),
        "recognitionModel": choice(request, "recognitionModel", RECOGNITION_MODELS, "recognition_01"),
        "returnRecognitionModel": flag(request, "returnRecognitionModel", False),
    }
    detection_model = choice(request, "detectionModel", DETECTION_MODELS, "detection_01")
    if detection_model != "detection_01" and want["attributes"]:
        raise AzureError(400, "BadArgument", f"'returnFaceAttributes' is not supported by {detection_model}.")
    if detection_model != "detection_01" and want["landmarks"]:
        raise AzureError(400, "BadArgument", f"'returnLandmarks' is not supported by {detection_model}.")
    flags = (
        ",".join(["propoints"] * want["landmarks"] + ["classifiers"] * bool(want["attributes"])) or "basic"
    )
    options = {"azure_request": str(uuid.uuid4())}  # new faceIds on every call, as Azure
    if want["landmarks"]:
        options["landmark_set"] = "azure27"
    _, image = await detect_image(session, request, flags, options)
    faces = sorted(image.faces, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1), reverse=True)[:100]
    return JSONResponse([face_entry(face, want) for face in faces])


# verify, identify, findsimilars, group -------------------------------------------------------------------


def _self_confidence() -> float:
    """Calibrated confidence of a face verified against itself (distance 0; fused profiles: their own zero)."""
    key = calibration_key(get_settings())
    return round(float(calibration.confidence(key, np.array([calibration.identical_distance(key)]))[0]), 4)


@router.post(
    "/verify",
    summary="Azure Face verify (drop-in)",
    openapi_extra=_body(_object(faceId1="s", faceId2="s", faceId="s", personId="s", personGroupId="s")),
)
async def verify(request: Request, session: Db) -> JSONResponse:
    body = await json_body(request)
    if isinstance(body.get("faceId1"), str) and isinstance(body.get("faceId2"), str):
        face, target = body["faceId1"], body["faceId2"]
        if face == target:
            await run_in_threadpool(lambda: query_faces(session, tenant_of(session, request), [face]))
            return JSONResponse({"isIdentical": True, "confidence": _self_confidence()})

        def check_target() -> None:
            query_faces(session, tenant_of(session, request), [target])

        await run_in_threadpool(check_target)
    elif isinstance(body.get("faceId"), str) and isinstance(body.get("personId"), str):
        face = body["faceId"]
        group = body.get("personGroupId")
        if not isinstance(group, str):
            raise AzureError(
                400, "BadArgument", "'personGroupId' is required (largePersonGroupId: not available)."
            )

        def person_target() -> tuple[str, bool]:
            person = person_row(session, tenant_of(session, request), group, body["personId"])
            faces = face_ids_of(session, person.id)
            if not faces:
                raise AzureError(400, "BadArgument", f"Person '{body['personId']}' has no persisted faces.")
            return str(PersonId(person.name, namespace_name("group", group))), face in faces

        target, own_face = await run_in_threadpool(person_target)
        if own_face:  # one of the person's own faces (recognition never matches a face with itself)
            return JSONResponse({"isIdentical": True, "confidence": _self_confidence()})
    else:
        raise AzureError(
            400, "BadArgument", "Send faceId1 and faceId2, or faceId, personId and personGroupId."
        )
    _, result = await run_recognition(session, request, [face], [target], 1)
    (best,) = result["results"][0]["matches"]  # one target face or person: one best match
    return JSONResponse({"isIdentical": best["is_match"], "confidence": best["confidence"]})


def _max(body: dict, default: int, upper: int) -> int:
    value = body.get("maxNumOfCandidatesReturned", default)
    if not isinstance(value, int) or not 1 <= value <= upper:
        raise AzureError(400, "BadArgument", f"'maxNumOfCandidatesReturned' must be 1-{upper}.")
    return value


@router.post(
    "/identify",
    summary="Azure Face identify (drop-in)",
    openapi_extra=_body(
        _object(faceIds="ids", personGroupId="s", maxNumOfCandidatesReturned="n", confidenceThreshold="n")
    ),
)
async def identify(request: Request, session: Db) -> JSONResponse:
    body = await json_body(request)
    faces = strings(body, "faceIds")
    if len(faces) > 10:
        raise AzureError(400, "BadArgument", "The length of faceIds must be 1-10.")
    group = body.get("personGroupId")
    if not isinstance(group, str):
        raise AzureError(
            400, "BadArgument", "'personGroupId' is required (largePersonGroupId: not available)."
        )
    top = _max(body, 1, 100)
    threshold = body.get("confidenceThreshold")
    if threshold is not None and not (isinstance(threshold, int | float) and 0 <= threshold <= 1):
        raise AzureError(400, "BadArgument", "'confidenceThreshold' must be 0-1.")

    def check() -> bool:
        tenant = tenant_of(session, request)
        row, ns = group_ns(session, tenant, group)
        if "trainedAt" not in row.data:
            raise AzureError(400, "PersonGroupNotTrained", f"Person group '{group}' not trained.")
        query_faces(session, tenant, faces)
        enrolled = select(Face.id).join(Person, Face.person_id == Person.id).where(Person.namespace_id == ns)
        return session.execute(enrolled.limit(1)).first() is not None

    if not await run_in_threadpool(check):
        return JSONResponse([{"faceId": f, "candidates": []} for f in faces])
    target = str(PersonId("all", namespace_name("group", group)))
    _, result = await run_recognition(session, request, faces, [target], top)
    out = []
    for item in result["results"]:
        chosen = [
            m
            for m in item["matches"]
            if (m["confidence"] >= threshold if threshold is not None else m["is_match"]) and m["person_id"]
        ]
        out.append(
            {
                "faceId": item["face_uuid"],
                "candidates": [
                    {"personId": m["person_id"].partition("@")[0], "confidence": m["confidence"]}
                    for m in chosen[:top]
                ],
            }
        )
    return JSONResponse(out)


@router.post(
    "/findsimilars",
    summary="Azure Face find similar (drop-in)",
    openapi_extra=_body(
        _object(faceId="s", faceIds="ids", faceListId="s", maxNumOfCandidatesReturned="n", mode="s")
    ),
)
async def findsimilars(request: Request, session: Db) -> JSONResponse:
    body = await json_body(request)
    face = body.get("faceId")
    if not isinstance(face, str):
        raise AzureError(400, "BadArgument", "'faceId' is required.")
    mode = body.get("mode", "matchPerson")
    if mode not in ("matchPerson", "matchFace"):
        raise AzureError(400, "BadArgument", "'mode' must be matchPerson or matchFace.")
    top = _max(body, 20, 1000)
    face_list = body.get("faceListId")
    if isinstance(face_list, str):

        def list_target() -> tuple[str | None, str]:
            _, ns = group_ns(session, tenant_of(session, request), face_list, "facelist")
            enrolled = (
                select(Face.id).join(Person, Face.person_id == Person.id).where(Person.namespace_id == ns)
            )
            has = session.execute(enrolled.limit(1)).first() is not None
            return (str(PersonId("all", namespace_name("facelist", face_list))) if has else None), ""

        target, _ = await run_in_threadpool(list_target)
        targets = [target] if target else []
        id_name = "persistedFaceId"
    else:
        targets = strings(body, "faceIds")
        await run_in_threadpool(lambda: query_faces(session, tenant_of(session, request), targets))
        id_name = "faceId"
    if not targets:
        return JSONResponse([])
    _, result = await run_recognition(session, request, [face], targets, top)
    matches = result["results"][0]["matches"]
    if mode == "matchPerson":
        matches = [m for m in matches if m["is_match"]]
    return JSONResponse([{id_name: m["face_uuid"], "confidence": m["confidence"]} for m in matches[:top]])


@router.post("/group", summary="Azure Face group (drop-in)", openapi_extra=_body(_object(faceIds="ids")))
async def group_faces(request: Request, session: Db) -> JSONResponse:
    body = await json_body(request)
    faces = list(dict.fromkeys(strings(body, "faceIds")))
    if len(faces) > 1000:
        raise AzureError(400, "BadArgument", "The length of faceIds must be 1-1000.")
    if len(faces) == 1:
        await run_in_threadpool(lambda: query_faces(session, tenant_of(session, request), faces))
        return JSONResponse({"groups": [], "messyGroup": faces})
    _, result = await run_recognition(session, request, faces, faces, len(faces))
    parent = {f: f for f in faces}

    def root(f: str) -> str:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    for item in result["results"]:
        for match in item["matches"]:
            if match["is_match"]:
                parent[root(item["face_uuid"])] = root(match["face_uuid"])
    clusters: dict[str, list[str]] = {}
    for f in faces:
        clusters.setdefault(root(f), []).append(f)
    groups = sorted((c for c in clusters.values() if len(c) > 1), key=len, reverse=True)
    messy = [c[0] for c in clusters.values() if len(c) == 1]
    return JSONResponse({"groups": groups, "messyGroup": messy})


# person groups --------------------------------------------------------------------------------------------


def _meta(body: dict, required_name: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in body or required_name:
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 128:
            raise AzureError(400, "BadArgument", "'name' is required: 1-128 characters.")
        out["name"] = name
    if "userData" in body:
        user_data = body["userData"]
        if user_data is not None and (not isinstance(user_data, str) or len(user_data) > 16 * 1024):
            raise AzureError(400, "BadArgument", "'userData' must be a string of at most 16KB.")
        out["userData"] = user_data
    return out


def _container_put(kind: str) -> Callable:
    async def put(request: Request, session: Db, container_id: str = _id_param(kind)) -> Response:
        body = await json_body(request)
        check_id(container_id, "personGroupId" if kind == "group" else "faceListId")
        data = _meta(body, True)
        data["recognitionModel"] = body.get("recognitionModel") or "recognition_01"
        if data["recognitionModel"] not in RECOGNITION_MODELS:
            raise AzureError(400, "BadArgument", "'recognitionModel' is invalid.")

        def create() -> None:
            tenant = tenant_of(session, request)
            if entry(session, tenant, kind, container_id) is not None:
                name = "PersonGroup" if kind == "group" else "FaceList"
                raise AzureError(409, f"{name}Exists", f"{name} '{container_id}' already exists.")
            namespace_id(session, tenant.id, namespace_name(kind, container_id), create=True)
            put_entry(session, tenant, kind, container_id, data)

        await run_in_threadpool(create)
        return Response(status_code=200)

    return put


def _container_json(session: Session, tenant: Tenant, kind: str, row: AzureEntry, ns: int, rm: bool) -> dict:
    id_name = "personGroupId" if kind == "group" else "faceListId"
    out = {id_name: row.key, "name": row.data.get("name"), "userData": row.data.get("userData")}
    if rm:
        out["recognitionModel"] = row.data.get("recognitionModel", "recognition_01")
    if kind == "facelist":
        uids = session.execute(
            select(Face.uid).join(Person, Face.person_id == Person.id).where(Person.namespace_id == ns)
        ).scalars()
        out["persistedFaces"] = [
            {
                "persistedFaceId": uid,
                "userData": (entry(session, tenant, "face", uid) or AzureEntry(data={})).data.get("userData"),
            }
            for uid in uids
        ]
    return out


def _id_name(kind: str) -> str:
    return "personGroupId" if kind == "group" else "faceListId"


def _id_path(kind: str) -> str:
    return "/{" + _id_name(kind) + "}"


def _id_param(kind: str) -> Any:
    return PathParam(alias=_id_name(kind))


def _register_containers(kind: str, path: str) -> None:
    router.put(path + _id_path(kind), summary=f"Azure {kind} create (drop-in)", openapi_extra=META_BODY)(
        _container_put(kind)
    )

    @router.get(path + _id_path(kind), summary=f"Azure {kind} get (drop-in)")
    def get(request: Request, session: Db, container_id: str = _id_param(kind)) -> dict:
        tenant = tenant_of(session, request)
        row, ns = group_ns(session, tenant, container_id, kind)
        return _container_json(session, tenant, kind, row, ns, flag(request, "returnRecognitionModel", False))

    @router.patch(path + _id_path(kind), summary=f"Azure {kind} update (drop-in)", openapi_extra=META_BODY)
    async def patch(request: Request, session: Db, container_id: str = _id_param(kind)) -> Response:
        data = _meta(await json_body(request), False)

        def update() -> None:
            tenant = tenant_of(session, request)
            group_ns(session, tenant, container_id, kind)
            put_entry(session, tenant, kind, container_id, data)

        await run_in_threadpool(update)
        return Response(status_code=200)

    @router.delete(path + _id_path(kind), summary=f"Azure {kind} delete (drop-in)")
    def remove(request: Request, session: Db, container_id: str = _id_param(kind)) -> Response:
        tenant = tenant_of(session, request)
        group_ns(session, tenant, container_id, kind)
        person_names = (
            select(Person.name)
            .join(Namespace)
            .where(Namespace.tenant_id == tenant.id, Namespace.name == namespace_name(kind, container_id))
        )
        persons = list(session.execute(person_names).scalars())
        faces = list(
            session.execute(
                select(Face.uid)
                .join(Person, Face.person_id == Person.id)
                .join(Namespace, Person.namespace_id == Namespace.id)
                .where(Namespace.tenant_id == tenant.id, Namespace.name == namespace_name(kind, container_id))
            ).scalars()
        )
        delete_namespace(session, tenant.id, namespace_name(kind, container_id), with_faces=True)
        session.execute(
            delete(AzureEntry).where(
                AzureEntry.tenant_id == tenant.id,
                ((AzureEntry.kind == "person") & AzureEntry.key.in_(persons))
                | ((AzureEntry.kind == "face") & AzureEntry.key.in_(faces)),
            )
        )
        session.execute(
            delete(AzureEntry).where(
                AzureEntry.tenant_id == tenant.id, AzureEntry.kind == kind, AzureEntry.key == container_id
            )
        )
        return Response(status_code=200)

    @router.get(path, summary=f"Azure {kind} list (drop-in)")
    def listing(request: Request, session: Db, start: str = "", top: int = 1000) -> list[dict]:
        tenant = tenant_of(session, request)
        rm = flag(request, "returnRecognitionModel", False)
        rows = session.execute(
            select(AzureEntry)
            .where(AzureEntry.tenant_id == tenant.id, AzureEntry.kind == kind, AzureEntry.key > start)
            .order_by(AzureEntry.key)
            .limit(max(1, min(top, 1000)))
        ).scalars()
        out = []
        for row in rows:
            ns = namespace_id(session, tenant.id, namespace_name(kind, row.key), create=False)
            if ns is not None:
                item = _container_json(session, tenant, kind, row, ns, rm)
                item.pop("persistedFaces", None)
                out.append(item)
        return out


_register_containers("group", "/persongroups")
_register_containers("facelist", "/facelists")


@router.post(
    "/persongroups/{personGroupId}/train", status_code=202, summary="Azure person group train (drop-in)"
)
def train(group: GroupIdP, request: Request, session: Db) -> Response:
    tenant = tenant_of(session, request)
    group_ns(session, tenant, group)
    put_entry(session, tenant, "group", group, {"trainedAt": utcnow().isoformat()})
    return Response(status_code=202)


@router.get("/persongroups/{personGroupId}/training", summary="Azure person group training status (drop-in)")
def training(group: GroupIdP, request: Request, session: Db) -> dict:
    """Training is immediate: `succeeded` once train was called, `nonstarted` before (the documented
    states are nonstarted, running, succeeded, failed; running and failed never occur)."""
    tenant = tenant_of(session, request)
    row, _ = group_ns(session, tenant, group)
    trained = row.data.get("trainedAt")
    created = row.created_at.isoformat() if row.created_at else None
    return {
        "status": "succeeded" if trained else "nonstarted",
        "createdDateTime": created,
        "lastActionDateTime": trained,
        "lastSuccessfulTrainingDateTime": trained,
        "message": None,
    }


# persons --------------------------------------------------------------------------------------------------


def _person_json(session: Session, tenant: Tenant, person: Person) -> dict:
    data = (entry(session, tenant, "person", person.name) or AzureEntry(data={})).data
    return {
        "personId": person.name,
        "name": data.get("name"),
        "userData": data.get("userData"),
        "persistedFaceIds": face_ids_of(session, person.id),
    }


@router.post(
    "/persongroups/{personGroupId}/persons", summary="Azure person create (drop-in)", openapi_extra=META_BODY
)
async def create_person(group: GroupIdP, request: Request, session: Db) -> dict:
    data = _meta(await json_body(request), True)

    def create() -> dict:
        tenant = tenant_of(session, request)
        _, ns = group_ns(session, tenant, group)
        person_id = str(uuid.uuid4())
        session.add(Person(namespace_id=ns, name=person_id))
        put_entry(session, tenant, "person", person_id, data)
        return {"personId": person_id}

    return await run_in_threadpool(create)


@router.get("/persongroups/{personGroupId}/persons", summary="Azure person list (drop-in)")
def list_group_persons(
    group: GroupIdP, request: Request, session: Db, start: str = "", top: int = 1000
) -> list[dict]:
    tenant = tenant_of(session, request)
    _, ns = group_ns(session, tenant, group)
    persons = session.execute(
        select(Person)
        .where(Person.namespace_id == ns, Person.name > start)
        .order_by(Person.name)
        .limit(max(1, min(top, 1000)))
    ).scalars()
    return [_person_json(session, tenant, p) for p in persons]


@router.get("/persongroups/{personGroupId}/persons/{personId}", summary="Azure person get (drop-in)")
def get_person(group: GroupIdP, person_id: PersonIdP, request: Request, session: Db) -> dict:
    tenant = tenant_of(session, request)
    return _person_json(session, tenant, person_row(session, tenant, group, person_id))


@router.patch(
    "/persongroups/{personGroupId}/persons/{personId}",
    summary="Azure person update (drop-in)",
    openapi_extra=META_BODY,
)
async def patch_person(group: GroupIdP, person_id: PersonIdP, request: Request, session: Db) -> Response:
    data = _meta(await json_body(request), False)

    def update() -> None:
        tenant = tenant_of(session, request)
        person_row(session, tenant, group, person_id)
        put_entry(session, tenant, "person", person_id, data)

    await run_in_threadpool(update)
    return Response(status_code=200)


@router.delete("/persongroups/{personGroupId}/persons/{personId}", summary="Azure person delete (drop-in)")
def delete_person(group: GroupIdP, person_id: PersonIdP, request: Request, session: Db) -> Response:
    tenant = tenant_of(session, request)
    person = person_row(session, tenant, group, person_id)
    faces = face_ids_of(session, person.id)
    delete_persons(session, tenant.id, PersonId(person_id, namespace_name("group", group)), with_faces=True)
    session.execute(
        delete(AzureEntry).where(
            AzureEntry.tenant_id == tenant.id,
            ((AzureEntry.kind == "person") & (AzureEntry.key == person_id))
            | ((AzureEntry.kind == "face") & AzureEntry.key.in_(faces)),
        )
    )
    return Response(status_code=200)


async def _add_face(
    request: Request, session: Db, kind: str, container: str, person_id: PersonIdP | None
) -> dict:
    detection_model = choice(request, "detectionModel", DETECTION_MODELS, "detection_01")
    user_data = request.query_params.get("userData")
    if user_data is not None and len(user_data) > 1024:
        raise AzureError(400, "BadArgument", "'userData' is too long (1KB at most).")

    def check() -> None:
        tenant = tenant_of(session, request)
        if person_id is None:
            group_ns(session, tenant, container, kind)
        else:
            person_row(session, tenant, container, person_id)

    await run_in_threadpool(check)
    # One job per container / person: the same photo enrolled twice must give two persisted faces.
    del detection_model  # accepted; one detector
    options = {"azure": f"{kind} {container} {person_id or ''}".strip()}
    tenant, image = await detect_image(session, request, "basic", options)

    def enrol() -> dict:
        face = one_face(image, request.query_params.get("targetFace"))
        if person_id is None:  # face list: the face is its own person
            set_person(
                session, tenant.id, [face.uid], str(PersonId(face.uid, namespace_name(kind, container)))
            )
        else:
            set_person(
                session, tenant.id, [face.uid], str(PersonId(person_id, namespace_name(kind, container)))
            )
        put_entry(session, tenant, "face", face.uid, {"userData": user_data})
        return {"persistedFaceId": face.uid}

    return await run_in_threadpool(enrol)


@router.post(
    "/persongroups/{personGroupId}/persons/{personId}/persistedFaces",
    summary="Azure person add face (drop-in)",
    openapi_extra=IMAGE_BODY,
)
async def add_person_face(group: GroupIdP, person_id: PersonIdP, request: Request, session: Db) -> dict:
    return await _add_face(request, session, "group", group, person_id)


@router.post(
    "/facelists/{faceListId}/persistedFaces",
    summary="Azure face list add face (drop-in)",
    openapi_extra=IMAGE_BODY,
)
async def add_list_face(face_list: ListIdP, request: Request, session: Db) -> dict:
    return await _add_face(request, session, "facelist", face_list, None)


def _persisted(session: Session, tenant: Tenant, owner_id: int | None, face_id: str) -> Face:
    face = session.execute(
        select(Face).where(Face.uid == face_id, Face.tenant_id == tenant.id)
    ).scalar_one_or_none()
    if face is None or owner_id is None or face.person_id != owner_id:
        raise AzureError(404, "PersistedFaceNotFound", f"Persisted face '{face_id}' is not found.")
    return face


def _list_face_owner(session: Session, tenant: Tenant, face_list: str, face_id: str) -> int | None:
    _, ns = group_ns(session, tenant, face_list, "facelist")
    return session.execute(
        select(Person.id).where(Person.namespace_id == ns, Person.name == face_id)
    ).scalar_one_or_none()


@router.get(
    "/persongroups/{personGroupId}/persons/{personId}/persistedFaces/{persistedFaceId}",
    summary="Azure get face",
)
def get_person_face(
    group: GroupIdP, person_id: PersonIdP, face_id: FaceIdP, request: Request, session: Db
) -> dict:
    tenant = tenant_of(session, request)
    face = _persisted(session, tenant, person_row(session, tenant, group, person_id).id, face_id)
    data = (entry(session, tenant, "face", face.uid) or AzureEntry(data={})).data
    return {"persistedFaceId": face.uid, "userData": data.get("userData")}


@router.patch(
    "/persongroups/{personGroupId}/persons/{personId}/persistedFaces/{persistedFaceId}",
    summary="Azure face update",
    openapi_extra=META_BODY,
)
async def patch_person_face(
    group: GroupIdP, person_id: PersonIdP, face_id: FaceIdP, request: Request, session: Db
) -> Response:
    data = _meta(await json_body(request), False)

    def update() -> None:
        tenant = tenant_of(session, request)
        _persisted(session, tenant, person_row(session, tenant, group, person_id).id, face_id)
        put_entry(session, tenant, "face", face_id, {"userData": data.get("userData")})

    await run_in_threadpool(update)
    return Response(status_code=200)


@router.delete(
    "/persongroups/{personGroupId}/persons/{personId}/persistedFaces/{persistedFaceId}",
    summary="Azure face delete",
)
def delete_person_face(
    group: GroupIdP, person_id: PersonIdP, face_id: FaceIdP, request: Request, session: Db
) -> Response:
    tenant = tenant_of(session, request)
    _persisted(session, tenant, person_row(session, tenant, group, person_id).id, face_id)
    delete_faces(session, tenant.id, Face.uid == face_id)
    session.execute(
        delete(AzureEntry).where(
            AzureEntry.tenant_id == tenant.id, AzureEntry.kind == "face", AzureEntry.key == face_id
        )
    )
    return Response(status_code=200)


@router.delete(
    "/facelists/{faceListId}/persistedFaces/{persistedFaceId}", summary="Azure face list delete face"
)
def delete_list_face(face_list: ListIdP, face_id: FaceIdP, request: Request, session: Db) -> Response:
    tenant = tenant_of(session, request)
    _persisted(session, tenant, _list_face_owner(session, tenant, face_list, face_id), face_id)
    delete_persons(session, tenant.id, PersonId(face_id, namespace_name("facelist", face_list)), True)
    session.execute(
        delete(AzureEntry).where(
            AzureEntry.tenant_id == tenant.id, AzureEntry.kind == "face", AzureEntry.key == face_id
        )
    )
    return Response(status_code=200)


# Azure's paths are case-insensitive; its clients send `persistedfaces`, its documentation `persistedFaces`.
for _route in list(router.routes):
    if isinstance(_route, APIRoute) and "persistedFaces" in _route.path:
        router.add_api_route(
            _route.path.removeprefix(PREFIX).replace("persistedFaces", "persistedfaces"),
            _route.endpoint,
            methods=list(_route.methods),
            status_code=_route.status_code,
            include_in_schema=False,
        )
