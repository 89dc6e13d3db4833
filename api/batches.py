"""Batches (v2): status counts, paged results, cancellation, URL manifests, and a namespace's faces
(for `facequeue export`). Thin: parse, authorise, delegate to schema/batches.py and api/uploads.py."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from api.deps import Db, authenticate
from api.uploads import UploadOptions, create_url_jobs, validate_url
from facequeue.settings import get_settings
from schema import answers, wire
from schema.batches import (
    batch_summary,
    cancel_queued,
    claim_drain_callback,
    ensure_batch,
    get_batch,
    parse_batch_name,
)
from schema.errors import ErrorCode, FacequeueError
from schema.inputs import Short, Url, WireModel
from schema.persons import namespace_id, parse_namespace
from schema.tables import Batch, Face, Image, Person
from workers.celery_app import enqueue_batch_callback

router = APIRouter(prefix="/v2", tags=["v2 batches"])
MAX_URLS = 10_000
MAX_PAGE = 500
MAX_LIST = 100  # each listed batch costs three counting queries


class BatchSettings(WireModel):  # schema.inputs: the wire check every request body gets
    api_key: Short | None = None
    callback_url: Url | None = Field(None, description="POSTed the batch summary once, when the batch drains")


class UrlManifest(UploadOptions):
    urls: list[Url] = Field(min_length=1, max_length=MAX_URLS)
    batch_callback_url: Url | None = Field(None, description="as PUT /v2/batches/{name} callback_url")


def _name(name: str) -> str:
    parsed = parse_batch_name(name)
    if parsed is None:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "batch name is empty")
    return parsed


@router.get("/batches", responses={200: {"model": answers.BatchList}})
def list_batches(
    request: Request,
    session: Db,
    cursor: int | None = None,
    limit: int = Query(20, ge=1, le=MAX_LIST),
) -> dict:
    """The key's batches, newest first, each with its summary (as GET /v2/batches/{name}); paged."""
    tenant = authenticate(session, request)
    query = select(Batch).where(Batch.tenant_id == tenant.id).order_by(Batch.id.desc()).limit(limit)
    if cursor is not None:
        query = query.where(Batch.id < cursor)
    batches = list(session.execute(query).scalars())
    return {
        "batches": [batch_summary(session, batch) for batch in batches],
        "next_cursor": batches[-1].id if len(batches) == limit else None,
    }


@router.put("/batches/{name}", responses={200: {"model": answers.BatchSummary}})
def put_batch(name: str, body: BatchSettings, request: Request, session: Db) -> dict:
    """Create a batch or set its drain callback (before its first upload, or while it still runs)."""
    tenant = authenticate(session, request, body.api_key)
    name = _name(name)
    if body.callback_url:
        validate_url(body.callback_url, get_settings(), "callback_url")
    ensure_batch(session, tenant.id, name, body.callback_url)
    batch = get_batch(session, tenant.id, name)
    # A callback set on a batch that has already drained fires now (once), not never.
    has_images = session.execute(
        select(Image.uid).where(Image.tenant_id == tenant.id, Image.batch == name).limit(1)
    ).first()
    drained = claim_drain_callback(session, tenant.id, name, None) if has_images else None
    session.commit()
    if drained is not None:
        enqueue_batch_callback(drained)
    return batch_summary(session, batch)


@router.get("/batches/{name}", responses={200: {"model": answers.BatchSummary}})
def get_batch_status(name: str, request: Request, session: Db) -> dict:
    tenant = authenticate(session, request)
    return batch_summary(session, get_batch(session, tenant.id, _name(name)))


@router.get("/batches/{name}/results", responses={200: {"model": answers.BatchResults}})
def get_batch_results(
    name: str,
    request: Request,
    session: Db,
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    status: str | None = Query(
        None, description="only images in this status (queued, processing, done, error)"
    ),
    embeddings: bool = False,
) -> dict:
    """One page of the batch's media answers, in a stable order; pass next_cursor back for the next."""
    tenant = authenticate(session, request)
    batch = get_batch(session, tenant.id, _name(name))
    faces = selectinload(Image.faces)
    query = (
        select(Image)
        .where(Image.tenant_id == tenant.id, Image.batch == batch.name)
        .options(faces.selectinload(Face.embeddings) if embeddings else faces)
        .order_by(Image.uid)
        .limit(limit)
    )
    if cursor:
        query = query.where(Image.uid > cursor)
    if status:
        query = query.where(Image.status == status)
    images = list(session.execute(query).scalars())
    return {
        "batch": batch.name,
        "results": [wire.media_v2(image, embeddings=embeddings) for image in images],
        "next_cursor": images[-1].uid if len(images) == limit else None,
    }


@router.delete("/batches/{name}", responses={200: {"model": answers.BatchCancelled}})
def delete_batch(name: str, request: Request, session: Db) -> dict:
    """Cancel what is still queued (error CANCELLED); images already processing finish normally."""
    tenant = authenticate(session, request)
    batch = get_batch(session, tenant.id, _name(name))
    cancelled = cancel_queued(session, tenant.id, batch.name)
    drained = claim_drain_callback(session, tenant.id, batch.name, None)
    session.commit()
    if drained is not None:
        enqueue_batch_callback(drained)
    return {"cancelled": cancelled, **batch_summary(session, batch)}


@router.post("/batches/{name}/urls", status_code=202, responses={202: {"model": answers.BatchUrls}})
def post_batch_urls(name: str, body: UrlManifest, request: Request, session: Db) -> dict:
    """Up to 10,000 image URLs in one request; workers fetch them under the image_url address policy."""
    tenant = authenticate(session, request, body.api_key)
    name = _name(name)
    settings = get_settings()
    if body.batch_callback_url:
        validate_url(body.batch_callback_url, settings, "batch_callback_url")
        ensure_batch(session, tenant.id, name, body.batch_callback_url)
    jobs, rejected = create_url_jobs(
        session,
        settings,
        tenant,
        body.urls,
        batch=name,
        detection_flags=body.detection_flags,
        options=body.options(),
    )
    return {
        "batch": name,
        "accepted": [{"url": job.source_url, "media_uuid": job.uid, "status": job.status} for job in jobs],
        "rejected": rejected,
    }


@router.get("/faces", responses={200: {"model": answers.NamespaceFaces}})
def get_namespace_faces(
    request: Request,
    session: Db,
    namespace: str = "",
    cursor: int = 0,
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    embeddings: bool = False,
) -> dict:
    """The enrolled faces of one namespace (each with its person and media uuid), paged by face id."""
    tenant = authenticate(session, request)
    ns = namespace_id(session, tenant.id, parse_namespace(namespace), create=False)
    faces: list[Face] = []
    if ns is not None:
        faces = list(
            session.execute(
                select(Face)
                .join(Person, Person.id == Face.person_id)
                .where(Face.tenant_id == tenant.id, Person.namespace_id == ns, Face.id > cursor)
                .order_by(Face.id)
                .limit(limit)
                .options(*([selectinload(Face.embeddings)] if embeddings else []))
            ).scalars()
        )
    return {
        "namespace": namespace,
        "faces": [
            {"media_uuid": face.image_uid, **wire.face_v2(face, embeddings=embeddings)} for face in faces
        ],
        "next_cursor": faces[-1].id if len(faces) == limit else None,
    }
