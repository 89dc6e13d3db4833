"""v2 REST endpoints (Betaface v2 field names)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import authenticate, db
from api.uploads import create_image_job, decode_base64, get_image, get_image_by_checksum
from api.v1 import UploadOptions
from facequeue.settings import get_settings
from schema import wire
from schema.errors import ErrorCode, FacequeueError
from schema.tables import Face, Image, Tenant

router = APIRouter(prefix="/v2", tags=["v2"])


class MediaRequest(UploadOptions):
    file_uri: str | None = Field(None, description="URL of the image (alias: url)")
    url: str | None = None
    file_base64: str | None = Field(None, description="base64 of the image file (alias: base64)")
    base64: str | None = None


def _accepted(image: Image) -> dict:
    return {"media_uuid": image.uid, "checksum": image.sha256, "status": image.status}


@router.post("/media", status_code=202)
def post_media(body: MediaRequest, request: Request, session: Session = Depends(db)) -> dict:
    tenant = authenticate(session, request, body.api_key)
    url = body.file_uri or body.url
    encoded = body.file_base64 or body.base64
    if bool(url) == bool(encoded):
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "send exactly one of file_uri and file_base64")
    image = create_image_job(
        session,
        get_settings(),
        tenant,
        data=decode_base64(encoded) if encoded else None,
        url=url,
        detection_flags=body.detection_flags,
        original_filename=body.original_filename or url,
        options=body.options(),
    )
    return _accepted(image)


@router.post("/media/file", status_code=202)
def post_media_file(
    request: Request,
    file: UploadFile = File(...),
    detection_flags: str | None = Form(None),
    original_filename: str | None = Form(None),
    callback_url: str | None = Form(None),
    api_key: str | None = Form(None),
    session: Session = Depends(db),
) -> dict:
    tenant = authenticate(session, request, api_key)
    settings = get_settings()
    data = file.file.read(settings.max_upload_bytes + 1)
    image = create_image_job(
        session,
        settings,
        tenant,
        data=data,
        detection_flags=detection_flags,
        original_filename=original_filename or file.filename,
        options={"callback_url": callback_url},
    )
    return _accepted(image)


@router.get("/media/hash/{sha256}")
def get_media_by_hash(
    sha256: str, request: Request, embeddings: bool = False, session: Session = Depends(db)
) -> dict:
    tenant = authenticate(session, request)
    return wire.media_v2(get_image_by_checksum(session, tenant, sha256), embeddings=embeddings)


@router.get("/media/{uid}")
def get_media(uid: str, request: Request, embeddings: bool = False, session: Session = Depends(db)) -> dict:
    tenant = authenticate(session, request)
    return wire.media_v2(get_image(session, tenant, uid), embeddings=embeddings)


@router.get("/admin/usage")
def usage(request: Request, session: Session = Depends(db)) -> dict:
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
