"""Celery tasks. Each is idempotent: running one twice, or after a crash, converges on the same rows."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
from celery import signals
from sqlalchemy import delete, select

from facequeue.settings import Settings, get_settings
from schema import wire
from schema.blobs import drop_blob, get_blob, put_blob
from schema.db import session_scope
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.flags import parse_flags
from schema.persons import set_person
from schema.tables import Embedding, Face, Image, RecognizeJob
from workers import jobs
from workers.celery_app import app, enqueue_callback, enqueue_recognize
from workers.http import download, post_json
from workers.pipeline.decode import decode_image
from workers.pipeline.types import FaceAnalysis

log = logging.getLogger(__name__)


def analyse(rgb: np.ndarray, flags: frozenset[str], options: dict, settings: Settings) -> list[FaceAnalysis]:
    from workers.pipeline.analyse import get_pipeline

    if options.get("quality_checks"):
        flags = flags | {"classifiers"}  # the pose checks need yaw and pitch
    return get_pipeline(settings).analyse(
        rgb, set(flags), options={"landmark_set": options.get("landmark_set") or "betaface"}
    )


def checks_for(rgb: np.ndarray, faces: list[FaceAnalysis], settings: Settings) -> list[str]:
    from workers.pipeline.quality_checks import QualityThresholds, quality_checks

    return quality_checks(rgb.shape, faces, QualityThresholds(**settings.quality_thresholds))


def face_uid(image_uid: str, index: int) -> str:
    # Stable across retries: re-processing an image yields the same face uids.
    return str(uuid.uuid5(uuid.UUID(image_uid), f"face-{index}"))


def _face_rows(image: Image, faces: list[FaceAnalysis]) -> list[Face]:
    rows = []
    for index, face in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in face.box)
        uid = face_uid(image.uid, index)
        rows.append(
            Face(
                uid=uid,
                image_uid=image.uid,
                tenant_id=image.tenant_id,
                index=index,
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                angle=float(face.angle),
                score=float(face.score),
                points=[
                    {"x": round(p.x, 2), "y": round(p.y, 2), "type": p.type, "name": p.name}
                    for p in face.points
                ],
                tags=[
                    {"name": t.name, "value": t.value, "confidence": round(t.confidence, 4)}
                    for t in face.tags
                ],
                embeddings=[
                    Embedding(face_uid=uid, model_id=model_id, vector=np.asarray(vec, dtype="<f4").tobytes())
                    for model_id, vec in face.embeddings.items()
                ],
            )
        )
    return rows


def _load_bytes(image_uid: str, settings: Settings) -> tuple[bytes, str | None]:
    """The image bytes; a URL upload is downloaded (once) and stored content-addressed."""
    with session_scope() as session:
        image = session.get(Image, image_uid)
        sha256, url = image.sha256, image.source_url
        if sha256 is not None:
            data = get_blob(session, settings, sha256)
            if data is None:
                raise FacequeueError(ErrorCode.PROCESSING_FAILED, "the original bytes are no longer stored")
            return data, None
    data = download(url, settings)
    with session_scope() as session:
        sha256 = put_blob(session, settings, data)
        session.get(Image, image_uid).sha256 = sha256
    return data, sha256


@app.task(name="facequeue.process_image", bind=True, max_retries=None)
def process_image(self, image_uid: str) -> str:  # type: ignore[no-untyped-def]
    settings = get_settings()
    with session_scope() as session:
        image = jobs.claim(session, Image, image_uid, settings.job_lease_s)
        if image is None:
            return "not claimable"  # done, failed, unknown, or another worker holds a live lease
        attempt, flags, options = image.attempts, parse_flags(image.detection_flags), image.options
        if attempt > settings.max_attempts:
            jobs.finish(image, ErrorCode.PROCESSING_FAILED, f"gave up after {attempt - 1} attempts")
            if image.options.get("callback_url"):
                enqueue_callback(image_uid)
            return "failed"

    timings: dict[str, float] = {}
    error: FacequeueError | None = None
    try:
        start = time.perf_counter()
        data, _ = _load_bytes(image_uid, settings)
        timings["load"] = time.perf_counter() - start
        start = time.perf_counter()
        decoded = decode_image(data, settings.max_upload_bytes, settings.max_image_pixels)
        timings["decode"] = time.perf_counter() - start
        if settings.debug_task_delay_s:
            time.sleep(settings.debug_task_delay_s)
        start = time.perf_counter()
        faces = analyse(decoded.rgb, flags, options, settings)
        timings["analyse"] = time.perf_counter() - start
        checks = checks_for(decoded.rgb, faces, settings) if options.get("quality_checks") else None
    except FacequeueError as exc:
        error = exc
    except Exception as exc:
        log.exception("process_image %s attempt %d failed", image_uid, attempt)
        with session_scope() as session:
            jobs.release(session, Image, image_uid, attempt)
        raise self.retry(exc=exc, countdown=min(60, 2**attempt)) from exc

    with session_scope() as session:
        image = jobs.lock_if_current(session, Image, image_uid, attempt)
        if image is None:
            return "superseded"  # our lease expired and a newer attempt owns the job
        follow_up = None
        if error is not None:
            jobs.finish(image, error.code, error.message)
        else:
            session.execute(delete(Face).where(Face.image_uid == image_uid))
            session.add_all(_face_rows(image, faces or []))
            image.format, image.width, image.height = decoded.format, decoded.width, decoded.height
            image.size = len(data)
            image.timings = {k: round(v, 4) for k, v in timings.items()}
            image.quality_checks = checks
            jobs.finish(image)
            session.flush()
            follow_up = _apply_upload_options(session, image)
        if not settings.keep_originals and image.sha256 and not _still_needed(session, image):
            drop_blob(session, settings, image.sha256)
        wants_callback = bool(image.options.get("callback_url"))
    if wants_callback:
        enqueue_callback(image_uid)
    if error is None and follow_up:
        enqueue_recognize(follow_up)
    return image.status


def _apply_upload_options(session: Any, image: Image) -> str | None:
    """Upload-time set_person_id (enrol every face found) and recognize_targets (identify them).

    Returns the uid of a recognition job to enqueue once committed, if any.
    """
    face_uids = [face.uid for face in image.faces]
    person = image.options.get("set_person_id")
    if person and face_uids:
        set_person(session, image.tenant_id, face_uids, person)
    targets = image.options.get("recognize_targets")
    if not targets:
        return None
    uid = wire.recognize_uid_for(image.uid)
    if session.get(RecognizeJob, uid) is None:
        request = {
            "faces_uuids": face_uids,
            "targets": targets,
            "parameters": image.options.get("parameters"),
        }
        session.add(RecognizeJob(uid=uid, tenant_id=image.tenant_id, request=request))
    return uid


def _still_needed(session: Any, image: Image) -> bool:
    """Another job (any tenant) still waiting for the same bytes."""
    return (
        session.execute(
            select(Image.uid).where(
                Image.sha256 == image.sha256,
                Image.uid != image.uid,
                Image.status.in_([JobStatus.QUEUED, JobStatus.PROCESSING]),
            )
        ).first()
        is not None
    )


@app.task(name="facequeue.deliver_callback", bind=True, max_retries=None)
def deliver_callback(self, image_uid: str) -> str:  # type: ignore[no-untyped-def]
    """POST the finished result to callback_url; retried with backoff, never blocks the job itself."""
    settings = get_settings()
    with session_scope() as session:
        image = session.get(Image, image_uid)
        if (
            image is None
            or image.callback_status == "sent"
            or image.status not in (JobStatus.DONE, JobStatus.ERROR)
        ):
            return "nothing to send"
        url, payload = image.options["callback_url"], wire.media_v2(image)
        image.callback_attempts += 1
        attempt = image.callback_attempts
    try:
        status = post_json(url, payload, settings)
        error = None if 200 <= status < 300 else f"callback answered HTTP {status}"
    except FacequeueError as exc:
        error = exc.message
    except Exception as exc:  # any network failure is the receiver's problem, recorded, never fatal
        error = f"{type(exc).__name__}: {exc}"
    with session_scope() as session:
        image = session.get(Image, image_uid)
        image.callback_error = error
        if error is None:
            image.callback_status = "sent"
        elif attempt >= settings.callback_max_attempts:
            image.callback_status = "failed"
        else:
            image.callback_status = "pending"
    if error is not None and attempt < settings.callback_max_attempts:
        enqueue_callback(image_uid, countdown=min(300, 2**attempt))
    return image.callback_status


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from workers.reaper import start_reaper_thread

    start_reaper_thread()


@app.task(name="facequeue.recognize", bind=True, max_retries=None)
def recognize(self, job_uid: str) -> str:  # type: ignore[no-untyped-def]
    from workers.recognize import recognize as run_recognition

    settings = get_settings()
    with session_scope() as session:
        job = jobs.claim(session, RecognizeJob, job_uid, settings.job_lease_s)
        if job is None:
            return "not claimable"
        attempt, tenant_id, request = job.attempts, job.tenant_id, job.request
        if attempt > settings.max_attempts:
            jobs.finish(job, ErrorCode.PROCESSING_FAILED, f"gave up after {attempt - 1} attempts")
            return "failed"
    result: dict | None = None
    error: FacequeueError | None = None
    try:
        with session_scope() as session:
            result = run_recognition(session, tenant_id, request, settings)
    except FacequeueError as exc:
        error = exc
    except Exception as exc:
        log.exception("recognize %s attempt %d failed", job_uid, attempt)
        with session_scope() as session:
            jobs.release(session, RecognizeJob, job_uid, attempt)
        raise self.retry(exc=exc, countdown=min(60, 2**attempt)) from exc
    with session_scope() as session:
        job = jobs.lock_if_current(session, RecognizeJob, job_uid, attempt)
        if job is None:
            return "superseded"
        job.result = result
        jobs.finish(job, error.code if error else None, error.message if error else None)
        return job.status
