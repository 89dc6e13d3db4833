"""Betaface v1 JSON endpoints: POST /v1/<Function> and /service_json.svc/<Function>.

Errors answer HTTP 200 with a negative int_response and string_response, as Betaface did.
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request

from api import faces, recognition
from api.deps import Db, authenticate
from api.uploads import (
    UploadOptions,
    V1Request,
    create_image_job,
    decode_base64,
    get_image,
    get_image_by_checksum,
    validate_url,
)
from api.vendors import betaface_xml
from facequeue.settings import get_settings
from schema import wire
from schema.inputs import Base64, Short, Url


class UploadFileRequest(UploadOptions):
    imagefile_data: Base64 | None = None


class UploadUrlRequest(UploadOptions):
    image_url: Url | None = None


class ImageInfoRequest(V1Request):
    img_uid: Short = ""


class ImageFileInfoRequest(V1Request):
    img_checksum: Short = ""


def _uploaded(uid: str) -> dict:
    return {"int_response": 0, "string_response": "ok", "img_uid": uid}


def register(router: APIRouter) -> None:
    @router.post("/UploadNewImage_File")
    def upload_file(
        body: UploadFileRequest,
        request: Request,
        session: Db,
        background: BackgroundTasks = None,  # type: ignore[assignment]  # None: the XML flavour calls us
    ) -> dict:
        tenant = authenticate(session, request, body.api_key)
        image = create_image_job(
            session,
            get_settings(),
            tenant,
            data=decode_base64(body.imagefile_data, "imagefile_data"),
            detection_flags=body.detection_flags,
            original_filename=body.original_filename,
            options=body.options(),
            batch=body.batch,
            send_later=background,
        )
        return _uploaded(image.uid)

    @router.post("/UploadNewImage_Url")
    def upload_url(
        body: UploadUrlRequest,
        request: Request,
        session: Db,
        background: BackgroundTasks = None,  # type: ignore[assignment]  # None: the XML flavour calls us
    ) -> dict:
        tenant = authenticate(session, request, body.api_key)
        image = create_image_job(
            session,
            get_settings(),
            tenant,
            url=validate_url(body.image_url, get_settings(), "image_url"),
            detection_flags=body.detection_flags,
            original_filename=body.original_filename,
            options=body.options(),
            batch=body.batch,
            send_later=background,
        )
        return _uploaded(image.uid)

    @router.post("/GetImageInfo")
    def image_info(body: ImageInfoRequest, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        return wire.image_info_v1(get_image(session, tenant, body.img_uid))

    @router.post("/GetImageFileInfo")
    def image_file_info(body: ImageFileInfoRequest, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        return wire.image_info_v1(get_image_by_checksum(session, tenant, body.img_checksum))


def make_routers() -> list[APIRouter]:
    """The JSON functions under /v1 and /service_json.svc, and the same functions as XML under /service.svc."""
    routers = []
    for prefix in ("/v1", "/service_json.svc"):
        router = APIRouter(prefix=prefix, tags=["v1 (Betaface)"], include_in_schema=prefix == "/v1")
        register(router)
        recognition.register_v1(router)
        faces.register_v1(router)
        routers.append(router)
    routers.append(betaface_xml.make_router(routers[0].routes))
    return routers
