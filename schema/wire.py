"""What goes over the wire: Betaface v1 and v2 JSON shapes, built from table rows.

Shared by the api (poll responses) and the workers (callback payloads), so both always say the same thing.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from schema.errors import ErrorCode, JobStatus
from schema.tables import Face, Image, RecognizeJob


def job_error(job: Image | RecognizeJob) -> tuple[ErrorCode, str]:
    """The code and message of a job that ended in error (v1 and v2 render them differently)."""
    code = ErrorCode.from_v1(job.error_code if job.error_code is not None else ErrorCode.INTERNAL_ERROR.v1)
    return code, job.error_message or code.message


def recognize_uid_for(image_uid: str) -> str:
    """The recognition job that an upload with recognize_targets creates (stable across retries)."""
    return str(uuid.uuid5(uuid.UUID(image_uid), "recognize"))


def person_id(face: Face) -> str | None:
    if face.person is None:
        return None
    return f"{face.person.name}@{face.person.namespace.name}"


def _centre_box(face: Face) -> dict[str, float]:
    # Betaface reports x, y as the centre of the face box.
    return {
        "x": round((face.x1 + face.x2) / 2, 2),
        "y": round((face.y1 + face.y2) / 2, 2),
        "width": round(face.x2 - face.x1, 2),
        "height": round(face.y2 - face.y1, 2),
        "angle": round(face.angle, 2),
    }


def _embeddings(face: Face) -> dict[str, Any]:
    if not face.embeddings:
        return {"embedding": None, "embedding_model": None}
    # The primary (profile's first) model is listed first; others go under `embeddings`.
    first, *rest = face.embeddings
    out: dict[str, Any] = {
        "embedding": np.frombuffer(first.vector, dtype="<f4").round(6).tolist(),
        "embedding_model": first.model_id,
    }
    if rest:
        out["embeddings"] = {e.model_id: np.frombuffer(e.vector, dtype="<f4").round(6).tolist() for e in rest}
    return out


def face_v2(face: Face, embeddings: bool = False) -> dict[str, Any]:
    """One face of a v2 media answer (also each line of a namespace export)."""
    item = {"face_uuid": face.uid, **_centre_box(face), "detection_score": round(face.score, 4)}
    item.update(points=face.points, tags=face.tags, person_id=person_id(face))
    if embeddings:
        item.update(_embeddings(face))
    return item


def media_v2(image: Image, embeddings: bool = False) -> dict[str, Any]:
    """GET /v2/media/{uuid}."""
    faces = [face_v2(face, embeddings) for face in image.faces] if image.status == JobStatus.DONE else []
    error = None
    if image.status == JobStatus.ERROR:
        code, message = job_error(image)
        error = {"code": code.name, "message": message}
    return {
        "media_uuid": image.uid,
        "checksum": image.sha256,
        "status": image.status,
        "error": error,
        "original_filename": image.original_filename,
        "width": image.width,
        "height": image.height,
        "detection_flags": image.detection_flags,
        "faces": faces,
        "recognize_uuid": recognize_uid_for(image.uid) if image.options.get("recognize_targets") else None,
        "quality_checks": image.quality_checks,
        "batch": image.batch,
        "nsfw": image.nsfw,
    }


def image_info_v1(image: Image) -> dict[str, Any]:
    """Betaface BetafaceImageInfoResponse (GetImageInfo / GetImageFileInfo)."""
    base: dict[str, Any] = {
        "uid": image.uid,
        "checksum": image.sha256,
        "original_filename": image.original_filename,
    }
    if image.status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        return {"int_response": 1, "string_response": "Request is in the queue", **base, "faces": None}
    if image.status == JobStatus.ERROR:
        code, message = job_error(image)
        return {
            "int_response": code.v1,
            "string_response": message,
            **base,
            "faces": None,
        }
    faces = [
        {
            "uid": face.uid,
            "image_uid": image.uid,
            **_centre_box(face),
            "score": round(face.score, 4),
            "points": face.points,
            "tags": face.tags,
            "person_name": person_id(face) or "",
            "user_points": None,
        }
        for face in image.faces
    ]
    return {
        "int_response": 0,
        "string_response": "ok",
        **base,
        "faces": faces,
        "quality_checks": image.quality_checks,
        "nsfw": image.nsfw,
    }
