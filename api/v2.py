"""v2 REST endpoints (Betaface v2 field names)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from starlette.concurrency import run_in_threadpool

from api.deps import Db, authenticate
from api.uploads import (
    UploadOptions,
    create_file_jobs,
    create_image_job,
    decode_base64,
    get_image,
    get_image_by_checksum,
    validate_url,
)
from api.wait import wait_all_finished, wait_finished
from facequeue.settings import get_settings
from schema import answers, wire
from schema.erase import delete_image
from schema.errors import ErrorCode, FacequeueError
from schema.inputs import Base64, Url
from schema.tables import Face, Image, RecognizeJob, Tenant
from workers.reaper import broker_view

router = APIRouter(prefix="/v2", tags=["v2"])


class MediaRequest(UploadOptions):
    file_uri: Url | None = Field(None, description="URL of the image (alias: url)")
    url: Url | None = None
    file_base64: Base64 | None = Field(None, description="base64 of the image file (alias: base64)")
    base64: Base64 | None = None


def _accepted(image: Image) -> dict:
    return {"media_uuid": image.uid, "checksum": image.sha256, "status": image.status}


WAIT = Query(
    None,
    ge=0,
    description="seconds to wait for the result (capped by FACEQUEUE_SYNC_WAIT_S): 200 with the finished "
    "media when done in time, else the usual 202; the job stays queued and pollable either way",
)


async def answer_media(session: Session, image: Image, wait: float | None) -> JSONResponse:
    """202 accepted at once; with `wait`, the finished media (200, as the poll) if the job ends in time."""
    if await wait_finished(Image, image.uid, wait):
        await run_in_threadpool(session.refresh, image)
        return JSONResponse(await run_in_threadpool(wire.media_v2, image))
    return JSONResponse(_accepted(image), status_code=202)


@router.post(
    "/media",
    status_code=202,
    responses={202: {"model": answers.MediaAccepted}, 200: {"model": answers.Media}},
)
async def post_media(
    body: MediaRequest,
    request: Request,
    session: Db,
    background: BackgroundTasks,
    wait: float | None = WAIT,
) -> JSONResponse:
    def create() -> Image:
        tenant = authenticate(session, request, body.api_key)
        settings = get_settings()
        url_field, url = ("file_uri", body.file_uri) if body.file_uri else ("url", body.url)
        b64_field, encoded = (
            ("file_base64", body.file_base64) if body.file_base64 else ("base64", body.base64)
        )
        if bool(url) == bool(encoded):
            raise FacequeueError(ErrorCode.INVALID_REQUEST, "send exactly one of file_uri and file_base64")
        return create_image_job(
            session,
            settings,
            tenant,
            data=decode_base64(encoded, b64_field) if encoded else None,
            url=validate_url(url, settings, url_field) if url else None,
            detection_flags=body.detection_flags,
            original_filename=body.original_filename,
            options=body.options(),
            batch=body.batch,
            send_later=None if wait else background,  # a waiting request needs its message sent now
        )

    return await answer_media(session, await run_in_threadpool(create), wait)


@router.post(
    "/media/file",
    status_code=202,
    responses={202: {"model": answers.MediaAccepted}, 200: {"model": answers.Media}},
)
async def post_media_file(
    request: Request,
    session: Db,
    background: BackgroundTasks,
    form: Annotated[UploadOptions, Form()],
    file: UploadFile = File(...),
    wait: float | None = WAIT,
) -> JSONResponse:
    """Multipart upload: the file plus the same options as the JSON route, as form fields."""

    def create() -> Image:
        tenant = authenticate(session, request, form.api_key)
        settings = get_settings()
        data = file.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            size = f"{file.size} bytes" if file.size else f"more than {settings.max_upload_bytes} bytes"
            raise FacequeueError(
                ErrorCode.IMAGE_TOO_LARGE, f"file is {size}; the limit is {settings.max_upload_bytes}"
            )
        return create_image_job(
            session,
            settings,
            tenant,
            data=data,
            detection_flags=form.detection_flags,
            original_filename=form.original_filename or file.filename,
            options=form.options(),
            batch=form.batch,
            send_later=None if wait else background,  # a waiting request needs its message sent now
        )

    return await answer_media(session, await run_in_threadpool(create), wait)


MAX_FILES = 64  # per multi-file request: a group, not an archive (the client sends archives in groups)


@router.post(
    "/media/files",
    status_code=202,
    responses={202: {"model": answers.MediaFiles}, 200: {"model": answers.MediaFiles}},
)
async def post_media_files(
    request: Request,
    session: Db,
    background: BackgroundTasks,
    form: Annotated[UploadOptions, Form()],
    file: list[UploadFile] = File(..., description=f"1 to {MAX_FILES} image files, each a `file` part"),
    wait: float | None = WAIT,
) -> JSONResponse:
    """Several files in one multipart request, with the same options (form fields) for all: for bulk
    clients, which then pay the request's fixed costs once per group. Each file becomes its own job, as
    if uploaded alone (same dedupe, same answers); a file refused on its own is listed in `rejected` and
    does not stop the others. With `wait`, 200 once every accepted job has finished (each entry is then
    the finished media, as the poll), else 202 with each job's entry as it stands."""

    def create() -> tuple[list[tuple[int, Image]], list[dict]]:
        tenant = authenticate(session, request, form.api_key)
        settings = get_settings()
        if len(file) > MAX_FILES:
            raise FacequeueError(ErrorCode.INVALID_REQUEST, f"at most {MAX_FILES} files per request")
        if form.original_filename:
            raise FacequeueError(
                ErrorCode.INVALID_REQUEST, "original_filename names one file; here each part's file name does"
            )
        files = [(upload.file.read(settings.max_upload_bytes + 1), upload.filename) for upload in file]
        return create_file_jobs(
            session,
            settings,
            tenant,
            files,
            detection_flags=form.detection_flags,
            options=form.options(),
            batch=form.batch,
            send_later=None if wait else background,  # a waiting request needs its messages sent now
        )

    accepted, rejected = await run_in_threadpool(create)
    uids = list(dict.fromkeys(image.uid for _, image in accepted))
    finished = await wait_all_finished(Image, uids, wait)

    def entries() -> list[dict]:
        if finished:  # one query for the finished jobs and their faces
            session.execute(
                select(Image)
                .where(Image.uid.in_(finished))
                .options(selectinload(Image.faces))
                .execution_options(populate_existing=True)
            ).all()
        return [
            {"index": index, **(wire.media_v2(image) if image.uid in finished else _accepted(image))}
            for index, image in accepted
        ]

    body = {"accepted": await run_in_threadpool(entries), "rejected": rejected}
    return JSONResponse(body, status_code=200 if wait and len(finished) == len(uids) else 202)


@router.get("/media/hash/{sha256}", responses={200: {"model": answers.Media}})
def get_media_by_hash(sha256: str, request: Request, session: Db, embeddings: bool = False) -> dict:
    tenant = authenticate(session, request)
    return wire.media_v2(get_image_by_checksum(session, tenant, sha256), embeddings=embeddings)


@router.get("/media/{uid}", responses={200: {"model": answers.Media}})
def get_media(uid: str, request: Request, session: Db, embeddings: bool = False) -> dict:
    tenant = authenticate(session, request)
    return wire.media_v2(get_image(session, tenant, uid), embeddings=embeddings)


@router.get("/media", responses={200: {"model": answers.MediaList}})
def list_media(
    request: Request, session: Db, cursor: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> dict:
    """The tenant's media, newest first, `limit` per page; pass `next_cursor` back for the next page."""
    tenant = authenticate(session, request)
    query = (
        select(Image).where(Image.tenant_id == tenant.id).order_by(Image.created_at.desc(), Image.uid.desc())
    )
    if cursor:
        after = get_image(session, tenant, cursor)
        query = query.where(
            (Image.created_at < after.created_at)
            | ((Image.created_at == after.created_at) & (Image.uid < after.uid))
        )
    page = list(session.execute(query.limit(limit + 1)).scalars())
    items = [
        {
            "media_uuid": image.uid,
            "status": image.status,
            "original_filename": image.original_filename,
            "created_at": image.created_at.isoformat(),
            "faces": len(image.faces),
        }
        for image in page[:limit]
    ]
    return {"media": items, "next_cursor": page[limit - 1].uid if len(page) > limit else None}


@router.delete("/media/{uid}", responses={200: {"model": answers.Deleted}})
def delete_media(uid: str, request: Request, session: Db) -> dict:
    """Erase an image: its bytes (unless another upload has the same bytes), faces, vectors and index entries."""
    tenant = authenticate(session, request)
    faces = delete_image(session, get_settings(), get_image(session, tenant, uid))
    return {"deleted": uid, "faces_deleted": faces}


@router.get("/admin/usage", responses={200: {"model": answers.Usage}})
def usage(request: Request, session: Db) -> dict:
    """Per-tenant counts of images, faces and their states. Admin keys only."""
    if not authenticate(session, request).is_admin:
        raise FacequeueError(ErrorCode.FORBIDDEN)
    images = session.execute(
        select(Tenant.name, Image.status, func.count(Image.uid))
        .join(Image, Image.tenant_id == Tenant.id)
        .group_by(Tenant.name, Image.status)
    ).all()
    faces = session.execute(
        select(Tenant.name, func.count(Face.uid))
        .join(Face, Face.tenant_id == Tenant.id)
        .group_by(Tenant.name)
    ).all()
    tenants: dict[str, dict] = {}
    for name, status, count in images:
        tenants.setdefault(name, {"images": {}, "faces": 0})["images"][status] = count
    for name, count in faces:
        tenants.setdefault(name, {"images": {}, "faces": 0})["faces"] = count
    return {"tenants": tenants}


@router.get("/admin/queues", responses={200: {"model": answers.QueueDepths}})
def queues(request: Request, session: Db) -> dict:
    """Messages waiting in each broker queue, and jobs by status in the database. Admin keys only."""
    if not authenticate(session, request).is_admin:
        raise FacequeueError(ErrorCode.FORBIDDEN)
    answer: dict = {"broker": "ok", "queues": None}
    try:
        answer["queues"] = broker_view().depths
    except Exception as exc:  # the database's side is still worth showing while the broker is away
        answer["broker"] = f"error: {type(exc).__name__}"
    for key, model in (("images", Image), ("recognitions", RecognizeJob)):
        rows = session.execute(select(model.status, func.count()).group_by(model.status)).all()
        answer[key] = {status: count for status, count in rows}
    return answer
