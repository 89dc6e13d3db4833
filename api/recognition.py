"""Persons and recognition endpoints, v1 (Betaface JSON) and v2. Recognition itself runs on the workers."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Db, authenticate, is_uuid
from api.wait import wait_finished
from facequeue.settings import get_settings
from schema import answers, wire
from schema.erase import delete_namespace, delete_persons, list_namespaces
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.inputs import Short, WireModel
from schema.persons import (
    check_targets,
    list_persons,
    owned_faces,
    parse_namespace,
    parse_person_id,
    set_person,
)
from schema.tables import RecognizeJob, Tenant
from workers.celery_app import enqueue_recognize
from workers.recognize import parse_parameters

router = APIRouter(prefix="/v2", tags=["v2"])


MAX_QUERY_FACES = 100  # query faces per recognition
MAX_TARGETS = 1000  # targets per recognition (a namespace, `all@ns`, counts as one)


def check_recognition(
    session: Session, tenant: Tenant, faces: list[str], targets: list[str], parameters: str | None
) -> None:
    """Everything about a recognition that can be checked before the faces exist: sizes, parameters,
    the tenant's query faces and the targets. /v2/recognize, Faces_Recognize and uploads with
    recognize_targets all go through here (upload-time queries are the faces still to be found)."""
    if len(faces) > MAX_QUERY_FACES or len(targets) > MAX_TARGETS:
        raise FacequeueError(
            ErrorCode.INVALID_REQUEST,
            f"at most {MAX_QUERY_FACES} query faces and {MAX_TARGETS} targets per recognition",
        )
    parse_parameters(parameters, get_settings().default_fmr)
    owned_faces(session, tenant.id, sorted(set(faces)))
    if targets:
        check_targets(session, tenant.id, targets)


def create_recognize_job(
    session: Session, tenant: Tenant, faces: list[str], targets: list[str], parameters: str | None
) -> RecognizeJob:
    """Validate what can be validated now (ids, syntax), commit the job, then enqueue it."""
    if not faces or not targets:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "faces and targets must both be non-empty")
    check_recognition(session, tenant, faces, targets, parameters)
    job = RecognizeJob(
        tenant_id=tenant.id, request={"faces_uuids": faces, "targets": targets, "parameters": parameters}
    )
    session.add(job)
    session.commit()
    with contextlib.suppress(Exception):  # broker away: the reaper re-sends committed jobs
        enqueue_recognize(job.uid)
    return job


def get_recognize_job(session: Session, tenant: Tenant, uid: str) -> RecognizeJob:
    job = session.get(RecognizeJob, uid) if is_uuid(uid) else None
    if job is None or job.tenant_id != tenant.id:
        raise FacequeueError(ErrorCode.NOT_FOUND)
    return job


# v2 ------------------------------------------------------------------------------------------------------


MAX_PERSON_FACES = 1000  # faces assigned in one call


class PersonRequest(WireModel):
    api_key: Short | None = None
    faces_uuids: list[Short] = Field(min_length=1, max_length=MAX_PERSON_FACES)
    person_id: Short = ""


class RecognizeRequest(WireModel):
    api_key: Short | None = None
    faces_uuids: list[Short] = Field(max_length=MAX_QUERY_FACES)
    targets: list[Short] = Field(max_length=MAX_TARGETS)
    parameters: Short | None = None


@router.post("/person", responses={200: {"model": answers.PersonSet}})
def post_person(body: PersonRequest, request: Request, session: Db) -> dict:
    tenant = authenticate(session, request, body.api_key)
    person = set_person(session, tenant.id, body.faces_uuids, body.person_id)
    return {"person_id": person, "faces_uuids": body.faces_uuids}


@router.get("/person", responses={200: {"model": answers.Persons}})
def get_person(person_id: str, request: Request, session: Db) -> dict:
    tenant = authenticate(session, request)
    return {"persons": list_persons(session, tenant.id, person_id)}


@router.delete("/person", responses={200: {"model": answers.Deleted}})
def delete_person(person_id: str, request: Request, session: Db, delete_faces: bool = False) -> dict:
    """Delete a person (`name@ns`) or every person of a namespace (`all@ns`): their faces are unassigned,
    or erased too with `delete_faces=true`."""
    tenant = authenticate(session, request)
    persons, faces = delete_persons(session, tenant.id, parse_person_id(person_id), delete_faces)
    return {
        "deleted": person_id,
        "persons_deleted": persons,
        "faces_deleted" if delete_faces else "faces_unassigned": faces,
    }


@router.get("/namespaces", responses={200: {"model": answers.Namespaces}})
def get_namespaces(request: Request, session: Db) -> dict:
    tenant = authenticate(session, request)
    return {"namespaces": list_namespaces(session, tenant.id)}


@router.delete("/namespaces", responses={200: {"model": answers.Deleted}})
def delete_namespace_route(namespace: str, request: Request, session: Db, delete_faces: bool = False) -> dict:
    """Delete a namespace and its persons (`namespace=` empty: the default one); faces as for persons."""
    tenant = authenticate(session, request)
    persons, faces = delete_namespace(session, tenant.id, parse_namespace(namespace), delete_faces)
    return {
        "deleted": namespace,
        "persons_deleted": persons,
        "faces_deleted" if delete_faces else "faces_unassigned": faces,
    }


@router.post(
    "/recognize",
    status_code=202,
    responses={202: {"model": answers.RecognizeAccepted}, 200: {"model": answers.Recognition}},
)
async def post_recognize(
    body: RecognizeRequest,
    request: Request,
    session: Db,
    wait: float | None = Query(
        None,
        ge=0,
        description="seconds to wait for the result (capped by FACEQUEUE_SYNC_WAIT_S): 200 with the "
        "finished recognition when done in time, else the usual 202",
    ),
) -> JSONResponse:
    def create() -> RecognizeJob:
        tenant = authenticate(session, request, body.api_key)
        return create_recognize_job(session, tenant, body.faces_uuids, body.targets, body.parameters)

    job = await run_in_threadpool(create)
    if await wait_finished(RecognizeJob, job.uid, wait):
        await run_in_threadpool(session.refresh, job)
        return JSONResponse(recognize_v2(job))
    return JSONResponse({"recognize_uuid": job.uid}, status_code=202)


def recognize_v2(job: RecognizeJob) -> dict:
    body: dict = {"recognize_uuid": job.uid, "status": job.status, "error": None, "results": []}
    if job.status == JobStatus.ERROR:
        code, message = wire.job_error(job)
        body["error"] = {"code": code.name, "message": message}
    if job.status == JobStatus.DONE and job.result:
        body.update(job.result)
    return body


@router.get("/recognize/{uid}", responses={200: {"model": answers.Recognition}})
def get_recognize(uid: str, request: Request, session: Db) -> dict:
    tenant = authenticate(session, request)
    return recognize_v2(get_recognize_job(session, tenant, uid))


# v1 ------------------------------------------------------------------------------------------------------


class SetPersonV1(WireModel):
    api_key: Short | None = None
    faces_uids: list[Short] = Field(min_length=1, max_length=MAX_PERSON_FACES)
    person_id: Short = ""


class RecognizeV1(WireModel):
    api_key: Short | None = None
    faces_uids: list[Short] = Field(max_length=MAX_QUERY_FACES)
    targets: list[Short] = Field(max_length=MAX_TARGETS)
    parameters: Short | None = None


class RecognizeResultV1(WireModel):
    api_key: Short | None = None
    recognize_uid: Short = ""


def register_v1(v1_router: APIRouter) -> None:
    @v1_router.post("/Faces_SetPerson")
    def faces_set_person(body: SetPersonV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        set_person(session, tenant.id, body.faces_uids, body.person_id)
        return {"int_response": 0, "string_response": "ok"}

    @v1_router.post("/Faces_Recognize")
    def faces_recognize(body: RecognizeV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        job = create_recognize_job(session, tenant, body.faces_uids, body.targets, body.parameters)
        return {"int_response": 0, "string_response": "ok", "recognize_uid": job.uid}

    @v1_router.post("/GetRecognizeResult")
    def get_recognize_result(body: RecognizeResultV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        job = get_recognize_job(session, tenant, body.recognize_uid)
        if job.status in (JobStatus.QUEUED, JobStatus.PROCESSING):
            return {"int_response": 1, "string_response": "Request is in the queue", "recognize_uid": job.uid}
        if job.status == JobStatus.ERROR:
            code, message = wire.job_error(job)
            return {"int_response": code.v1, "string_response": message}
        faces_matches = [
            {
                "face_uid": result["face_uuid"],
                "matches": [
                    {
                        "face_uid": m["face_uuid"],
                        "person_name": m["person_id"] or "",
                        "confidence": m["confidence"],
                        "is_match": m["is_match"],
                    }
                    for m in result["matches"]
                ],
            }
            for result in job.result["results"]
        ]
        return {
            "int_response": 0,
            "string_response": "ok",
            "recognize_uid": job.uid,
            "faces_matches": faces_matches,
        }
