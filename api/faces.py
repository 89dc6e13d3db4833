"""Face images: a face cropped from its original (Betaface GetFaceImage) and the average of several faces
(Betaface Transform_Faces action 0). Pure image geometry on stored points: no model runs here."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from PIL import Image as PILImage
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.deps import Db, authenticate
from facequeue.settings import get_settings
from schema import answers
from schema.blobs import get_blob
from schema.erase import delete_faces
from schema.errors import ErrorCode, FacequeueError
from schema.persons import owned_faces
from schema.tables import Face, Image
from workers.pipeline.align import align, umeyama, warp_chips
from workers.pipeline.decode import decode_image
from workers.pipeline.points import LANDMARK5_TYPES

router = APIRouter(prefix="/v2", tags=["v2"])
# ArcFace's 5-point template (112 px), scaled to the requested size: the usual aligned-face framing.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
MAX_AVERAGE_FACES = 200


def _rgb_of(session: Session, face: Face) -> np.ndarray:
    settings = get_settings()
    image = session.get(Image, face.image_uid)
    data = get_blob(session, settings, image.sha256) if image.sha256 else None
    if data is None:
        raise FacequeueError(
            ErrorCode.NOT_AVAILABLE, "the original image is no longer stored (retention setting)"
        )
    return decode_image(data, settings.max_upload_bytes, settings.max_image_pixels).rgb


def _landmarks5(face: Face) -> np.ndarray:
    by_type = {p["type"]: (p["x"], p["y"]) for p in face.points}
    return np.array([by_type[kind] for kind in LANDMARK5_TYPES], dtype=np.float32)


def face_crop(session: Session, face: Face, aligned: bool, size: int, margin: float = 0.25) -> np.ndarray:
    rgb = _rgb_of(session, face)
    if aligned:
        template = ARCFACE_112 * (size / 112)
        return align(rgb, _landmarks5(face)[None], template, size)[0]
    # The box grown by `margin` on each side, clipped to the image.
    w, h = face.x2 - face.x1, face.y2 - face.y1
    x1, y1 = max(0, int(face.x1 - margin * w)), max(0, int(face.y1 - margin * h))
    x2, y2 = min(rgb.shape[1], int(face.x2 + margin * w)), min(rgb.shape[0], int(face.y2 + margin * h))
    return rgb[y1:y2, x1:x2]


def average_face(session: Session, faces: list[Face], size: int) -> np.ndarray:
    """Every face warped onto the mean shape of its stored points (all of them: the dense named points when
    present), then averaged pixel by pixel."""
    shared = set.intersection(*({p["type"] for p in f.points} for f in faces))
    kinds = sorted(shared)
    shapes = [
        np.array([next((p["x"], p["y"]) for p in f.points if p["type"] == k) for k in kinds]) for f in faces
    ]
    # Mean shape in a normalised frame: each face's points mapped onto the ArcFace framing by its 5 points.
    frame = ARCFACE_112 * (size / 112)
    to_frame = [umeyama(_landmarks5(f), frame) for f in faces]
    mean_shape = np.mean([m[:, :2] @ s.T + m[:, 2:] for m, s in zip(to_frame, shapes, strict=True)], axis=0).T
    total = np.zeros((size, size, 3), np.float64)
    for face, shape in zip(faces, shapes, strict=True):
        matrix = umeyama(shape, mean_shape)
        total += warp_chips(_rgb_of(session, face), matrix[None], size)[0]
    return (total / len(faces)).round().astype(np.uint8)


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@router.get("/face/{uid}/image", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def get_face_image(
    uid: str,
    request: Request,
    session: Db,
    aligned: bool = False,
    size: int = Query(224, ge=32, le=1024),
) -> Response:
    tenant = authenticate(session, request)
    (face,) = owned_faces(session, tenant.id, [uid])
    return Response(jpeg(face_crop(session, face, aligned, size)), media_type="image/jpeg")


@router.delete("/face/{uid}", responses={200: {"model": answers.Deleted}})
def delete_face(uid: str, request: Request, session: Db) -> dict:
    """Erase one face: its vectors and index entries (the image and its other faces stay)."""
    tenant = authenticate(session, request)
    (face,) = owned_faces(session, tenant.id, [uid])
    return {"deleted": uid, "faces_deleted": delete_faces(session, tenant.id, Face.uid == face.uid)}


class AverageRequest(BaseModel):
    api_key: str | None = None
    faces_uuids: list[str] = Field(min_length=1, max_length=MAX_AVERAGE_FACES)
    size: int = Field(256, ge=64, le=1024)


@router.post("/transform/average", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def post_average(body: AverageRequest, request: Request, session: Db) -> Response:
    tenant = authenticate(session, request, body.api_key)
    faces = owned_faces(session, tenant.id, body.faces_uuids)
    return Response(jpeg(average_face(session, faces, body.size)), media_type="image/jpeg")


class FaceImageV1(BaseModel):
    api_key: str | None = None
    face_uid: str = ""


class TransformV1(BaseModel):
    api_key: str | None = None
    faces_uids: list[str] = Field(min_length=1, max_length=MAX_AVERAGE_FACES)
    action: int = 0


def register_v1(v1_router: APIRouter) -> None:
    @v1_router.post("/GetFaceImage")
    def get_face_image_v1(body: FaceImageV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        (face,) = owned_faces(session, tenant.id, [body.face_uid])
        data = jpeg(face_crop(session, face, aligned=False, size=224))
        return {
            "int_response": 0,
            "string_response": "ok",
            "uid": face.uid,
            "face_image": base64.b64encode(data).decode(),
        }

    @v1_router.post("/Transform_Faces")
    def transform_faces_v1(body: TransformV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        if body.action != 0:
            raise FacequeueError(ErrorCode.NOT_AVAILABLE, "only action 0 (average face) is available")
        data = jpeg(average_face(session, owned_faces(session, tenant.id, body.faces_uids), 256))
        return {"int_response": 0, "string_response": "ok", "face_image": base64.b64encode(data).decode()}
