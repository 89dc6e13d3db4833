"""Celery tasks. Each is idempotent: running one twice, or after a crash, converges on the same rows."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
from celery import signals
from sqlalchemy import delete, select

from facequeue import metrics
from facequeue.settings import Settings, get_settings
from schema import wire
from schema.batches import batch_summary, claim_drain_callback
from schema.blobs import drop_blob, get_blob, lock_blob, put_blob
from schema.db import is_outage, retry_outage, session_scope
from schema.errors import ErrorCode, FacequeueError, JobStatus
from schema.flags import parse_flags
from schema.persons import set_person
from schema.tables import Batch, Embedding, Face, FaceCrop, Image, RecognizeJob, utcnow
from workers import callbacks, jobs, notify
from workers.celery_app import (
    app,
    enqueue_batch_callback,
    enqueue_callback,
    enqueue_image,
    enqueue_recognize,
)
from workers.http import download, post_json
from workers.pipeline.crops import Crop, make_crop
from workers.pipeline.decode import DecodedImage, decode_image
from workers.pipeline.types import FaceAnalysis

log = logging.getLogger(__name__)


def analyse(rgb: np.ndarray, flags: frozenset[str], options: dict, settings: Settings) -> list[FaceAnalysis]:
    from workers.pipeline.analyse import get_pipeline

    if options.get("quality_checks"):
        flags = flags | {"classifiers"}  # the pose checks need yaw and pitch
    return get_pipeline(settings).analyse(
        rgb,
        set(flags),
        options={
            "landmark_set": options.get("landmark_set") or "betaface",
            "detection_mode": options.get("detection_mode") or settings.detection_mode,
        },
    )


def nsfw_for(rgb: np.ndarray, settings: Settings) -> dict:
    """The image-level `nsfw` result: open_nsfw score and its label at FACEQUEUE_NSFW_THRESHOLD."""
    from workers.pipeline.analyse import get_pipeline

    score = float(get_pipeline(settings).nsfw_scores([rgb])[0])
    return {"score": round(score, 4), "label": "nsfw" if score >= settings.nsfw_threshold else "sfw"}


def checks_for(rgb: np.ndarray, faces: list[FaceAnalysis], settings: Settings) -> list[str]:
    from workers.pipeline.quality_checks import QualityThresholds, quality_checks

    return quality_checks(rgb.shape, faces, QualityThresholds(**settings.quality_thresholds))


def face_uid(image_uid: str, index: int) -> str:
    # Stable across retries: re-processing an image yields the same face uids.
    return str(uuid.uuid5(uuid.UUID(image_uid), f"face-{index}"))


def _face_rows(image: Image, faces: list[FaceAnalysis], crops: list[Crop]) -> list[Face]:
    rows = []
    for index, (face, crop) in enumerate(zip(faces, crops, strict=True)):
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
                crop=FaceCrop(
                    face_uid=uid,
                    jpeg=crop.jpeg,
                    left=crop.left,
                    top=crop.top,
                    scale=crop.scale,
                    landmarks5=np.round(crop.landmarks5, 2).tolist(),
                ),
            )
        )
    return rows


def _load_bytes(image: Image, settings: Settings) -> bytes:
    """The claimed job's bytes; a URL upload is downloaded (once) and stored content-addressed."""
    if image.sha256 is not None:
        with session_scope() as session:
            data = get_blob(session, settings, image.sha256)
        if data is None:
            raise FacequeueError(ErrorCode.PROCESSING_FAILED, "the original bytes are no longer stored")
        return data
    data = download(image.source_url, settings)
    with session_scope() as session:
        session.get(Image, image.uid).sha256 = put_blob(session, settings, data)
    return data


def outage_countdown(task: Any) -> int:
    """Backoff for a task that met a restarting database: 1, 2, 4, ... 30 s."""
    return min(30, 2**task.request.retries)


def run_job(
    task: Any,
    model: type[Image] | type[RecognizeJob],
    uid: str,
    work: Callable,
    store: Callable,
    resume: int | None = None,
) -> str:
    """The life of every job: claim it, work outside any transaction, then write the outcome if still ours.

    `work(job, settings)` returns an outcome; a FacequeueError becomes the job's error. Anything else is
    either a transient fault (jobs.is_transient: database, broker, network): the job goes back to the queue
    and the task retries with backoff, until max_attempts turns it into PROCESSING_FAILED; or deterministic
    (a bug, bad input found late): the job ends at once with PROCESSING_FAILED, since a retry would fail the
    same way. `store(session, job, outcome, error)` writes the result and returns what to do once it is
    committed (enqueue follow-ups); a result the database refuses ends the job the same way.

    A database outage is retried at once with backoff: the claim by retrying the task; the work by
    retrying the task with `resume` (our lease and attempt number are kept, no attempt is spent); the
    final write in place (the outcome is already computed), then as a resumed task.
    """
    settings = get_settings()
    try:
        with session_scope() as session:
            job = jobs.claim(session, model, uid, settings.job_lease_s, resume=resume)
            if job is None:
                return "not claimable"  # done, failed, unknown, or another worker holds a live lease
    except Exception as exc:
        if is_outage(exc):
            raise task.retry(exc=exc, countdown=outage_countdown(task)) from exc
        raise
    attempt, outcome, error = job.attempts, None, None
    if attempt > settings.max_attempts:
        error = FacequeueError(ErrorCode.PROCESSING_FAILED, f"gave up after {attempt - 1} attempts")
    else:
        try:
            with jobs.renewing_lease(model, uid, attempt, settings.job_lease_s):
                outcome = work(job, settings)
        except FacequeueError as exc:
            error = exc
        except Exception as exc:
            if is_outage(exc):
                log.warning("%s %s: database unavailable, retrying", task.name, uid)
                raise task.retry(
                    exc=exc, countdown=outage_countdown(task), kwargs={"resume": attempt}
                ) from exc
            log.exception("%s %s attempt %d failed", task.name, uid, attempt)
            if not jobs.is_transient(exc):  # the same input would fail the same way: end it now
                error = jobs.unexpected_error(exc, "processing failed")
            else:
                with session_scope() as session:
                    jobs.release(session, model, uid, attempt)
                raise task.retry(exc=exc, countdown=min(60, 2**attempt)) from exc

    def write(
        outcome: Any = outcome, error: FacequeueError | None = error
    ) -> tuple[str, list[Callable[[], None]]]:
        with session_scope() as session:
            job = jobs.lock_if_current(session, model, uid, attempt)
            if job is None:
                return "superseded", []  # our lease expired and a newer attempt owns the job
            after_commit = store(session, job, outcome, error)
            return job.status, after_commit

    try:
        with jobs.renewing_lease(model, uid, attempt, settings.job_lease_s):
            try:
                status, after_commit = retry_outage(write, settings.job_lease_s)
            except Exception as exc:
                if jobs.is_transient(exc):
                    raise
                # The outcome itself cannot be stored (a value the database refuses): that will not change.
                log.exception("%s %s attempt %d: the result could not be stored", task.name, uid, attempt)
                failed = jobs.unexpected_error(exc, "the result could not be stored")
                status, after_commit = retry_outage(lambda: write(None, failed), settings.job_lease_s)
    except Exception as exc:
        if is_outage(exc):
            raise task.retry(exc=exc, countdown=outage_countdown(task), kwargs={"resume": attempt}) from exc
        raise
    if status in (JobStatus.DONE, JobStatus.ERROR):
        notify.job_finished(uid)  # committed: a waiting api request may answer now
    for action in after_commit:
        try:
            action()
        except Exception:  # broker away: the committed rows say what is owed and the reaper sends it
            log.warning(
                "%s %s: follow-up not sent now; the reaper will send it", task.name, uid, exc_info=True
            )
    return status


@dataclass
class ImageOutcome:
    size: int
    decoded: DecodedImage
    faces: list[FaceAnalysis]
    checks: list[str] | None
    timings: dict[str, float]
    nsfw: dict | None = None
    crops: list[Crop] = field(default_factory=list)


def load_image(image: Image, settings: Settings) -> tuple[int, DecodedImage, dict[str, float]]:
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = _load_bytes(image, settings)
    timings["load"] = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode_image(data, settings.max_upload_bytes, settings.max_image_pixels)
    timings["decode"] = time.perf_counter() - start
    return len(data), decoded, timings


def _stage_times(before: dict[str, float]) -> None:
    """Model inference time per pipeline stage since `before` (a copy of the pipeline's running totals)."""
    from workers.pipeline.analyse import get_pipeline

    for stage, total in get_pipeline().timings.items():
        if total > before.get(stage, 0.0):
            metrics.STAGE_SECONDS.labels(stage).observe(total - before.get(stage, 0.0))


def analyse_image(image: Image, settings: Settings, delay: bool = True) -> ImageOutcome:
    from workers.pipeline.analyse import get_pipeline

    size, decoded, timings = load_image(image, settings)
    if settings.debug_task_delay_s and delay:
        time.sleep(settings.debug_task_delay_s)
    before = dict(get_pipeline(settings).timings)
    start = time.perf_counter()
    flags = parse_flags(image.detection_flags)
    faces = analyse(decoded.rgb, flags, image.options, settings)
    timings["analyse"] = time.perf_counter() - start
    _stage_times(before)
    checks = checks_for(decoded.rgb, faces, settings) if image.options.get("quality_checks") else None
    nsfw = None
    if "nsfw" in flags:
        start = time.perf_counter()
        nsfw = nsfw_for(decoded.rgb, settings)
        timings["nsfw"] = time.perf_counter() - start
    start = time.perf_counter()
    crops = [make_crop(decoded.rgb, face.box, face.landmarks5) for face in faces]
    timings["crops"] = time.perf_counter() - start
    return ImageOutcome(size, decoded, faces, checks, timings, nsfw, crops)


def store_image(
    session: Any, image: Image, outcome: ImageOutcome | None, error: FacequeueError | None
) -> list[Callable[[], None]]:
    after_commit = []
    if error is not None:
        jobs.finish(image, error.code, error.message)
    else:
        if image.attempts > 1:  # defensive: a result is written once, with the job's end, by its attempt
            session.execute(delete(Face).where(Face.image_uid == image.uid))
        rows = _face_rows(image, outcome.faces, outcome.crops)
        session.add_all(rows)
        image.format, image.width, image.height = (
            outcome.decoded.format,
            outcome.decoded.width,
            outcome.decoded.height,
        )
        image.size = outcome.size
        image.timings = {k: round(v, 4) for k, v in outcome.timings.items()}
        image.quality_checks = outcome.checks
        image.nsfw = outcome.nsfw
        jobs.finish(image)
        session.flush()
        if follow_up := _apply_upload_options(session, image, [row.uid for row in rows]):
            after_commit.append(lambda: enqueue_recognize(follow_up))
    settings = get_settings()
    if (
        not settings.keep_originals
        and image.sha256
        and lock_blob(session, image.sha256) is not None  # before the check: see put_blob
        and not _still_needed(session, image)
    ):
        drop_blob(session, settings, image.sha256)
    if image.options.get("callback_url"):
        callbacks.make_due(image)  # committed with the result: the outbox entry
        after_commit.append(lambda: enqueue_callback(image.uid))
    if image.batch and (drained := claim_drain_callback(session, image.tenant_id, image.batch, image.uid)):
        after_commit.append(lambda: enqueue_batch_callback(drained))
    finished = (image.queue, image.status, error, image.created_at, image.finished_at)
    faces = 0 if outcome is None else len(outcome.faces)
    after_commit.append(lambda: _observe(*finished, faces))  # counted once committed
    return after_commit


@app.task(name="facequeue.process_image", bind=True, max_retries=None)
def process_image(self, image_uid: str, resume: int | None = None) -> str:  # type: ignore[no-untyped-def]
    if get_settings().batch_max_jobs <= 1:  # the default: one job per task
        return run_job(self, Image, image_uid, analyse_image, store_image, resume)
    return run_image_batch(image_uid)


def claim_batch(uid: str, settings: Settings) -> list[Image]:
    """This message's job, plus up to batch_max_jobs - 1 more queued jobs of the same queue.

    Waits at most batch_wait_ms for a fuller batch. The extra jobs' own messages later find them claimed
    and do nothing; should this worker die, their leases expire and the reaper re-sends them.
    """
    with session_scope() as session:
        first = jobs.claim(session, Image, uid, settings.job_lease_s)
    if first is None:
        return []
    batch = [first]
    deadline = time.monotonic() + settings.batch_wait_ms / 1000
    while len(batch) < settings.batch_max_jobs:
        with session_scope() as session:
            batch += jobs.claim_queued(
                session, first.queue, settings.batch_max_jobs - len(batch), settings.job_lease_s
            )
        left = deadline - time.monotonic()
        if len(batch) >= settings.batch_max_jobs or left <= 0:
            break
        time.sleep(min(left, max(0.005, settings.batch_wait_ms / 4000)))
    return batch


def analyse_batch(
    batch: list[Image], settings: Settings
) -> dict[str, ImageOutcome | FacequeueError | Exception]:
    """Every job's outcome: an ImageOutcome, its FacequeueError, or an unexpected exception (to retry).

    Jobs with the same flags and landmark set run through `FacePipeline.analyse_many` together; if that
    batch fails as a whole, each of its jobs is tried alone so one bad image cannot fail the others.
    """
    from workers.pipeline.analyse import get_pipeline

    outcomes: dict[str, ImageOutcome | FacequeueError | Exception] = {}
    loaded: dict[tuple[frozenset[str], str], list[tuple[Image, int, DecodedImage, dict[str, float]]]] = {}
    for image in batch:
        if image.attempts > settings.max_attempts:
            outcomes[image.uid] = FacequeueError(
                ErrorCode.PROCESSING_FAILED, f"gave up after {image.attempts - 1} attempts"
            )
            continue
        try:
            flags = parse_flags(image.detection_flags)
            size, decoded, timings = load_image(image, settings)
        except Exception as exc:  # FacequeueError is the job's answer; anything else is retried
            if not isinstance(exc, FacequeueError):
                log.exception("image %s attempt %d failed to load", image.uid, image.attempts)
            outcomes[image.uid] = exc
            continue
        if image.options.get("quality_checks"):
            flags = flags | {"classifiers"}  # the pose checks need yaw and pitch
        key = (flags, image.options.get("landmark_set") or "betaface")
        loaded.setdefault(key, []).append((image, size, decoded, timings))
    if settings.debug_task_delay_s:  # fault injection for durability tests
        time.sleep(settings.debug_task_delay_s)
    pipeline = get_pipeline(settings)
    for (flags, landmark_set), members in loaded.items():
        before = dict(pipeline.timings)
        start = time.perf_counter()
        try:
            results = pipeline.analyse_many(
                [decoded.rgb for _, _, decoded, _ in members], set(flags), {"landmark_set": landmark_set}
            )
        except Exception:
            log.exception("micro-batch of %d failed; running its jobs one by one", len(members))
            results = None
        share = (time.perf_counter() - start) / len(members)  # each job's part of the batch's time
        _stage_times(before)
        for index, (image, size, decoded, timings) in enumerate(members):
            if results is None:
                try:
                    outcomes[image.uid] = analyse_image(image, settings, delay=False)
                except Exception as exc:
                    if not isinstance(exc, FacequeueError):
                        log.exception("image %s attempt %d failed", image.uid, image.attempts)
                    outcomes[image.uid] = exc
                continue
            faces = results[index]
            timings["analyse"] = share
            checks = checks_for(decoded.rgb, faces, settings) if image.options.get("quality_checks") else None
            try:
                nsfw = nsfw_for(decoded.rgb, settings) if "nsfw" in flags else None
            except Exception as exc:
                outcomes[image.uid] = exc
                continue
            crops = [make_crop(decoded.rgb, face.box, face.landmarks5) for face in faces]
            outcomes[image.uid] = ImageOutcome(size, decoded, faces, checks, timings, nsfw, crops)
    return outcomes


@contextmanager
def keep_leases(batch: list[Image], settings: Settings) -> Iterator[None]:
    """Renew the batch's leases every third of a lease while it runs: a batch takes N jobs' time, and a
    lease that expired mid-batch would hand live work to another worker. A killed worker renews nothing."""
    stop = threading.Event()
    owned = [(image.uid, image.attempts) for image in batch]

    def renew() -> None:
        while not stop.wait(settings.job_lease_s / 3):
            try:
                with session_scope() as session:
                    jobs.renew_many(session, Image, owned, settings.job_lease_s)
            except Exception:  # the database briefly away: the next round tries again
                log.warning("could not renew the leases of %d jobs", len(owned), exc_info=True)

    thread = threading.Thread(target=renew, name="facequeue-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_image_batch(uid: str) -> str:
    """Claim a micro-batch, analyse it outside any transaction, then write each job's outcome if still ours.

    Each job keeps its own lease and attempt number (the fencing token): a job whose lease expired and was
    taken over is not overwritten. A job that failed unexpectedly goes back to the queue with a new message
    after a backoff, until max_attempts turns it into PROCESSING_FAILED.
    """
    settings = get_settings()
    batch = claim_batch(uid, settings)
    if not batch:
        return "not claimable"  # done, failed, unknown, or another worker holds a live lease
    metrics.BATCH_JOBS.labels(batch[0].queue).observe(len(batch))
    with keep_leases(batch, settings):
        outcomes = analyse_batch(batch, settings)
    statuses = []
    for image in batch:
        outcome = outcomes[image.uid]
        if not isinstance(outcome, ImageOutcome | FacequeueError):
            with session_scope() as session:
                jobs.release(session, Image, image.uid, image.attempts)
            enqueue_image(image.uid, image.queue, countdown=min(60, 2**image.attempts))
            statuses.append("retry")
            continue
        with session_scope() as session:
            job = jobs.lock_if_current(session, Image, image.uid, image.attempts)
            if job is None:
                statuses.append("superseded")  # our lease expired and a newer attempt owns the job
                continue
            error = outcome if isinstance(outcome, FacequeueError) else None
            after_commit = store_image(session, job, None if error else outcome, error)
            status = job.status
        notify.job_finished(image.uid)  # committed: a waiting api request may answer now
        for action in after_commit:
            try:
                action()
            except Exception:  # broker away: the committed rows say what is owed and the reaper sends it
                log.warning(
                    "image %s: follow-up not sent now; the reaper will send it", image.uid, exc_info=True
                )
        statuses.append(status)
    return ",".join(statuses)


def _observe(
    queue: str, status: str, error: FacequeueError | None, created: Any, finished: Any, faces: int
) -> None:
    metrics.JOBS_FINISHED.labels(queue, status).inc()
    if error is not None:
        metrics.JOB_ERRORS.labels(error.code.name).inc()
    metrics.FACES.labels(queue).inc(faces)
    if created is not None and finished is not None:
        # SQLite hands back naive datetimes; all of ours are UTC.
        created, finished = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (created, finished))
        metrics.JOB_LATENCY.labels(queue).observe(max(0.0, (finished - created).total_seconds()))


def _apply_upload_options(session: Any, image: Image, face_uids: list[str]) -> str | None:
    """Upload-time set_person_id (enrol every face found) and recognize_targets (identify them).

    Returns the uid of a recognition job to enqueue once committed, if any.
    """
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
    """POST the finished result to callback_url, if due (workers/callbacks.py); never blocks the job."""
    settings = get_settings()
    try:
        with session_scope() as session:
            image = callbacks.claim(session, image_uid, settings)
            if image is None:
                return "not due"  # sent, failed, backing off, or another worker is delivering it
            targets, payload = callbacks.owed(image), wire.media_v2(image)
            attempt, key = image.callback_attempts, callbacks.idempotency_key(image)
    except Exception as exc:
        if is_outage(exc):
            raise self.retry(exc=exc, countdown=outage_countdown(self)) from exc
        raise
    errors, sent_to = [], []
    for url in targets:
        error = _post(url, payload, settings, headers={"Idempotency-Key": key})
        if error is None:
            sent_to.append(url)
        else:
            errors.append(error)

    def write() -> str:
        with session_scope() as session:
            return callbacks.record(session, image_uid, attempt, "; ".join(errors) or None, settings, sent_to)

    # If the database stays away longer, the delivery lease lapses and the reaper sends it again.
    return retry_outage(write, settings.job_lease_s)


@app.task(name="facequeue.deliver_batch_callback", bind=True, max_retries=None)
def deliver_batch_callback(self, batch_id: int) -> str:  # type: ignore[no-untyped-def]
    """POST the batch summary to the batch's callback_url, once, when it drained; retried like image
    callbacks. The `pending` state was committed with the drain, so the reaper re-sends a lost message."""
    settings = get_settings()
    with session_scope() as session:
        batch = session.get(Batch, batch_id, with_for_update=True)  # one delivery at a time
        if batch is None or batch.callback_status != "pending":
            return "nothing to send"
        url, payload = batch.callback_url, batch_summary(session, batch)
        batch.callback_attempts += 1
        batch.updated_at = utcnow()
        attempt = batch.callback_attempts
    error = _post(url, payload, settings)
    with session_scope() as session:
        batch = session.get(Batch, batch_id)
        batch.callback_error = error
        batch.updated_at = utcnow()
        if error is None:
            batch.callback_status = "sent"
        elif attempt >= settings.callback_max_attempts:
            batch.callback_status = "failed"
        status = batch.callback_status
    if error is not None and attempt < settings.callback_max_attempts:
        enqueue_batch_callback(batch_id, countdown=min(300, 2**attempt))
    return status


def _post(url: str, payload: dict, settings: Settings, headers: dict | None = None) -> str | None:
    """POST JSON; the error text, or None when the receiver answered 2xx."""
    try:
        status = post_json(url, payload, settings, headers=headers)
        return None if 200 <= status < 300 else f"callback answered HTTP {status}"
    except FacequeueError as exc:
        return exc.message
    except Exception as exc:  # any network failure is the receiver's problem, recorded, never fatal
        return f"{type(exc).__name__}: {exc}"


@signals.worker_init.connect
def _fetch_models(**_: Any) -> None:
    """Fetch what is missing before taking any job; without the models a worker can only fail jobs."""
    from workers.models.fetch import ModelFetchError, fetch_all

    try:
        fetch_all(get_settings(), progress=False)
    except ModelFetchError as exc:
        log.critical("cannot start: %s", exc)
        raise SystemExit(f"facequeue worker: the model pack is not available ({exc})") from exc


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """Before the pool forks: children write metrics to shared files, this process serves /metrics."""
    settings = get_settings()
    metrics.enable_multiprocess("worker", settings.metrics_dir)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.worker_metrics_port, registry=metrics.process_registry())
        except OSError as exc:  # port taken (several workers on one host): serve jobs without metrics
            log.warning("worker metrics not served on port %d: %s", settings.worker_metrics_port, exc)


@signals.worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    metrics.mark_process_dead(pid or os.getpid())


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    from workers.reaper import start_reaper_thread

    start_reaper_thread()


_heartbeat: dict[str, Any] = {}


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    from workers.heartbeat import start_heartbeat_thread

    queues = ",".join(sorted(q.name for q in sender.app.amqp.queues.consume_from.values()))
    _heartbeat["name"] = sender.hostname
    _heartbeat["stop"] = start_heartbeat_thread(sender.hostname, queues)


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    from workers.heartbeat import forget

    if "stop" in _heartbeat:
        _heartbeat["stop"].set()
        with contextlib.suppress(Exception):
            forget(_heartbeat["name"])


@app.task(name="facequeue.recognize", bind=True, max_retries=None)
def recognize(self, job_uid: str, resume: int | None = None) -> str:  # type: ignore[no-untyped-def]
    from workers.recognize import recognize as run_recognition

    def work(job: RecognizeJob, settings: Settings) -> dict:
        with session_scope() as session:
            return run_recognition(session, job.tenant_id, job.request, settings)

    def store(session: Any, job: RecognizeJob, result: dict | None, error: FacequeueError | None) -> list:
        job.result = result
        jobs.finish(job, error.code if error else None, error.message if error else None)
        return []

    return run_job(self, RecognizeJob, job_uid, work, store, resume)


@app.task(name="facequeue.reembed_image", bind=True, max_retries=5)
def reembed_image(self, image_uid: str, profile: str) -> str:  # type: ignore[no-untyped-def]
    """Vectors of `profile` for the faces of one image (`facequeue reembed`); idempotent, retried."""
    from workers.reembed import reembed_image as run

    try:
        return run(image_uid, profile, get_settings())
    except Exception as exc:
        log.exception("reembed %s (%s) failed", image_uid, profile)
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc
