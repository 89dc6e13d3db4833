"""Face images: a face cropped (Betaface GetFaceImage) and the average of several faces (Betaface
Transform_Faces action 0). Pure image geometry on stored points and the face crops the worker stored: no
model runs here and no original image is decoded, so a request's work is bounded by its face count."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from PIL import Image as PILImage
from pydantic import Field

from api.deps import Db, authenticate
from schema import answers
from schema.erase import delete_faces
from schema.errors import ErrorCode, FacequeueError
from schema.inputs import Short, WireModel
from schema.persons import owned_faces
from schema.tables import Face
from workers.pipeline.align import align, umeyama, warp_chips
from workers.pipeline.crops import CROP_MAX_SIDE, Crop, crop_rgb, to_crop

router = APIRouter(prefix="/v2", tags=["v2"])
# ArcFace's 5-point template (112 px), scaled to the requested size: the usual aligned-face framing.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# Bounds on one request's work: faces × output pixels, each face read from its stored crop (≤ 512 px).
MAX_AVERAGE_FACES = 64
MAX_SIZE = CROP_MAX_SIDE


def _crop_of(face: Face) -> tuple[Crop, np.ndarray]:
    """The face's stored crop (cut by the worker) and its pixels; the original is never decoded here."""
    row = face.crop
    if row is None:
        raise FacequeueError(
            ErrorCode.NOT_AVAILABLE,
            f"face {face.uid} has no stored crop (processed before face crops were kept): upload the image again",
        )
    crop = Crop(row.jpeg, row.left, row.top, row.scale, np.asarray(row.landmarks5, np.float64))
    return crop, crop_rgb(crop)


def face_crop(face: Face, aligned: bool, size: int, margin: float = 0.25) -> np.ndarray:
    crop, rgb = _crop_of(face)
    if aligned:
        template = ARCFACE_112 * (size / 112)
        return align(rgb, crop.landmarks5[None], template, size)[0]
    # The box grown by `margin` on each side, clipped to the image (at most CROP_MAX_SIDE pixels).
    w, h = face.x2 - face.x1, face.y2 - face.y1
    (x1, y1), (x2, y2) = to_crop(
        [(face.x1 - margin * w, face.y1 - margin * h), (face.x2 + margin * w, face.y2 + margin * h)], crop
    )
    x1, y1 = max(0, int(x1)), max(0, int(y1))
    x2, y2 = min(rgb.shape[1], int(np.ceil(x2))), min(rgb.shape[0], int(np.ceil(y2)))
    return rgb[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]


def average_face(faces: list[Face], size: int) -> np.ndarray:
    """Every face warped onto the mean shape of its stored points (all of them: the dense named points when
    present), then averaged pixel by pixel. Each face comes from its stored crop, in crop pixels."""
    crops = [_crop_of(face) for face in faces]
    # The detector's 5 points and every named point all the faces share (point sets may differ by upload).
    kinds = sorted(set.intersection(*({(p["type"], p["name"]) for p in f.points} for f in faces)))
    shapes = [
        np.concatenate(
            [
                crop.landmarks5,
                to_crop(
                    np.array(
                        [
                            next((p["x"], p["y"]) for p in f.points if (p["type"], p["name"]) == k)
                            for k in kinds
                        ]
                    ).reshape(-1, 2),
                    crop,
                ),
            ]
        )
        for f, (crop, _) in zip(faces, crops, strict=True)
    ]
    # Mean shape in a normalised frame: each face's points mapped onto the ArcFace framing by its 5 points.
    frame = ARCFACE_112 * (size / 112)
    to_frame = [umeyama(crop.landmarks5, frame) for crop, _ in crops]
    mean_shape = np.mean([m[:, :2] @ s.T + m[:, 2:] for m, s in zip(to_frame, shapes, strict=True)], axis=0).T
    total = np.zeros((size, size, 3), np.float64)
    for (_, rgb), shape in zip(crops, shapes, strict=True):
        matrix = umeyama(shape, mean_shape)
        total += warp_chips(rgb, matrix[None], size)[0]
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
    size: int = Query(224, ge=32, le=MAX_SIZE),
) -> Response:
    tenant = authenticate(session, request)
    (face,) = owned_faces(session, tenant.id, [uid])
    return Response(jpeg(face_crop(face, aligned, size)), media_type="image/jpeg")


@router.delete("/face/{uid}", responses={200: {"model": answers.Deleted}})
def delete_face(uid: str, request: Request, session: Db) -> dict:
    """Erase one face: its vectors and index entries (the image and its other faces stay)."""
    tenant = authenticate(session, request)
    (face,) = owned_faces(session, tenant.id, [uid])
    return {"deleted": uid, "faces_deleted": delete_faces(session, tenant.id, Face.uid == face.uid)}


class AverageRequest(WireModel):
    api_key: Short | None = None
    faces_uuids: list[Short] = Field(min_length=1, max_length=MAX_AVERAGE_FACES)
    size: int = Field(256, ge=64, le=MAX_SIZE)


@router.post("/transform/average", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def post_average(body: AverageRequest, request: Request, session: Db) -> Response:
    tenant = authenticate(session, request, body.api_key)
    faces = owned_faces(session, tenant.id, body.faces_uuids)
    return Response(jpeg(average_face(faces, body.size)), media_type="image/jpeg")


class FaceImageV1(WireModel):
    api_key: Short | None = None
    face_uid: Short = ""


class TransformV1(WireModel):
    api_key: Short | None = None
    faces_uids: list[Short] = Field(min_length=1, max_length=MAX_AVERAGE_FACES)
    action: int = Field(0, ge=-(2**31), lt=2**31)


def register_v1(v1_router: APIRouter) -> None:
    @v1_router.post("/GetFaceImage")
    def get_face_image_v1(body: FaceImageV1, request: Request, session: Db) -> dict:
        tenant = authenticate(session, request, body.api_key)
        (face,) = owned_faces(session, tenant.id, [body.face_uid])
        data = jpeg(face_crop(face, aligned=False, size=224))
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
        data = jpeg(average_face(owned_faces(session, tenant.id, body.faces_uids), 256))
        return {"int_response": 0, "string_response": "ok", "face_image": base64.b64encode(data).decode()}
