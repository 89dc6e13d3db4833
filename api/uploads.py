"""Create image jobs: validate cheaply, store bytes, commit the row, then enqueue. No model runs here."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import json
import logging
import threading
import time
from urllib.parse import urlsplit

from fastapi import BackgroundTasks
from pydantic import Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import is_uuid
from api.limits import queue_limiter
from api.recognition import MAX_TARGETS, check_recognition
from facequeue import metrics
from facequeue.settings import Settings
from schema.batches import ensure_batch, parse_batch_name
from schema.blobs import put_blob, sha256_hex
from schema.errors import ErrorCode, FacequeueError
from schema.flags import DETECTION_MODES, LANDMARK_SETS, normalise_flags
from schema.images import sniff
from schema.inputs import FILENAME_MAX_LENGTH, Filename, Flags, Short, Url, WireModel, check_text
from schema.persons import assignable_person_id
from schema.tables import Image, Tenant
from workers import callbacks
from workers.celery_app import BULK_QUEUE, IMAGES_QUEUE, enqueue_callback, enqueue_image
from workers.http import check_address, check_url

log = logging.getLogger(__name__)
KNOWN_BATCH_TTL_S = 60.0


class KnownBatches:
    """Batch rows this process saw committed: an upload into a known batch skips ensure_batch's two
    statements (batch rows are never deleted; the TTL bounds what a tenant's erasure could leave)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[int, str]) -> bool:
        seen = self._seen.get(key)
        return seen is not None and time.monotonic() - seen < KNOWN_BATCH_TTL_S

    def add(self, key: tuple[int, str]) -> None:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen.clear()
            self._seen[key] = time.monotonic()


known_batches = KnownBatches()


class V1Request(WireModel):
    api_key: Short | None = None
    api_secret: Short | None = None  # accepted for compatibility; keys alone authenticate


class UploadOptions(V1Request):
    """Options of every upload route (v1 JSON, v2 JSON, v2 multipart): one model, one validation."""

    detection_flags: Flags | None = None
    original_filename: Filename | None = None
    callback_url: Url | None = None
    set_person_id: Short | None = None  # enrol the faces found under this person
    # identify the faces found against these targets (checked like /v2/recognize targets)
    recognize_targets: list[Short] | None = Field(None, max_length=MAX_TARGETS)
    recognize_parameters: Short | None = None
    landmark_set: Short | None = None  # betaface (default), facepp106, facepp83, azure27
    quality_checks: bool = False  # add the liveness API's quality error codes to the result
    batch: Short | None = None  # the tenant's batch this upload belongs to (GET /v2/batches/{name})
    detection_mode: Short | None = None  # fast, auto (default setting), accurate: workers/pipeline/detect.py

    @field_validator("recognize_targets", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # Multipart forms send "a@ns,b@ns" or the field repeated; ids never contain commas.
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    def options(self) -> dict:
        return {
            "detection_mode": self.detection_mode,
            "landmark_set": self.landmark_set,
            "quality_checks": self.quality_checks or None,
            "callback_url": self.callback_url,
            "set_person_id": self.set_person_id,
            "recognize_targets": self.recognize_targets,
            "parameters": self.recognize_parameters,
        }


def decode_base64(text: str | None, field: str) -> bytes:
    """`field` names the request field in messages (imagefile_data in v1, file_base64 in v2)."""
    if not text or not text.strip():
        raise FacequeueError(ErrorCode.EMPTY_IMAGE, f"{field} is empty")
    if text.startswith("data:") and "," in text:  # data URI
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FacequeueError(ErrorCode.BAD_BASE64, f"{field} is not valid base64") from exc


def validate_url(url: str | None, settings: Settings, field: str) -> str:
    """Syntax and literal-address checks now; the worker resolves and checks again before connecting."""
    if not url:
        raise FacequeueError(ErrorCode.URL_INVALID, f"{field} is empty")
    _, host, _ = check_url(url, field)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise FacequeueError(ErrorCode.URL_FORBIDDEN, f"{field} points at {host}") from None
        return url
    check_address(address, host, settings)
    return url


def create_image_job(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    *,
    data: bytes | None = None,
    url: str | None = None,
    detection_flags: str | None = None,
    original_filename: str | None = None,
    options: dict | None = None,
    batch: str | None = None,
    send_later: BackgroundTasks | None = None,
) -> Image:
    """Exactly one of data / url. Same bytes + same flags by the same tenant returns the existing job;
    so does the same URL + flags within one batch.

    An upload naming a batch is bulk work: it goes to the bulk queue, which workers drain only when no
    interactive job waits. A tenant at its queued-jobs limit of that queue gets TOO_MANY_QUEUED (429).
    With `send_later` (a route's BackgroundTasks) the broker message is sent once the answer is out."""
    image = _new_image(
        session,
        settings,
        tenant,
        data=data,
        url=url,
        detection_flags=detection_flags,
        original_filename=original_filename,
        options=options,
        batch=batch,
    )
    if image in session:  # a duplicate: the existing job, which now owes this upload its callback too
        if (options or {}).get("callback_url") and callbacks.add_url(image, options["callback_url"]):
            session.commit()  # the outbox entry first: the reaper sends it if this message is lost
            with contextlib.suppress(Exception):
                enqueue_callback(image.uid)
        return image
    session.add(image)
    try:
        session.commit()  # durable before the message exists
    except IntegrityError:  # a concurrent upload of the same bytes won the race
        session.rollback()
        return _find_duplicate(session, tenant, image.dedupe_key)
    if image.batch:  # committed: the batch row exists
        known_batches.add((tenant.id, image.batch))
    _enqueue(image, send_later)
    return image


def create_url_jobs(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    urls: list[str],
    *,
    batch: str,
    detection_flags: str | None = None,
    options: dict | None = None,
) -> tuple[list[Image], list[dict]]:
    """Many URL uploads into one batch in one transaction (POST /v2/batches/{name}/urls).

    Each URL passes the same checks as image_url (the worker resolves and checks again before fetching).
    Returns (jobs, rejected): a URL already in the batch with the same flags and options returns its
    existing job; a refused URL is listed with its error code and does not stop the others.
    """
    flags, options, batch = checked_job_settings(session, settings, tenant, detection_flags, options, batch)
    jobs: list[Image] = []
    rejected: list[dict] = []
    new: list[Image] = []
    seen: dict[str, Image] = {}
    for index, url in enumerate(urls):
        try:
            image = _build_image(
                settings, tenant, flags, options, batch, url=validate_url(url, settings, f"urls[{index}]")
            )
            image = seen.get(image.dedupe_key) or _find_duplicate(session, tenant, image.dedupe_key) or image
            if image not in session:
                queue_limiter().admit(session, tenant.id, image.queue, settings)
                _prepare_new(session, settings, tenant, image, None)
                seen[image.dedupe_key] = image
                new.append(image)
                session.add(image)
        except FacequeueError as exc:
            rejected.append({"index": index, "url": url, "code": exc.code.name, "message": exc.message})
            continue
        jobs.append(image)
    session.commit()  # one transaction for the whole manifest, durable before any message
    if jobs:  # committed: the batch row exists
        known_batches.add((tenant.id, jobs[0].batch))
    for image in new:
        _enqueue(image)
    return jobs, rejected


def create_file_jobs(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    files: list[tuple[bytes, str | None]],
    *,
    detection_flags: str | None = None,
    options: dict | None = None,
    batch: str | None = None,
    send_later: BackgroundTasks | None = None,
) -> tuple[list[tuple[int, Image]], list[dict]]:
    """Many file uploads (bytes, file name) with the same flags and options in one transaction
    (POST /v2/media/files): what a bulk client sends to pay the request's fixed costs once per group.

    Returns (accepted, rejected): accepted pairs each file's index with its job (the existing one for a
    duplicate, as a single upload would); a file refused on its own (too large, not an image) is listed
    with its error code and does not stop the others. The request is admitted as a whole while the
    tenant is under its queued-jobs limit, so a group never ends half refused by the limit.
    """
    flags, options, batch = checked_job_settings(session, settings, tenant, detection_flags, options, batch)
    built: list[tuple[int, Image, bytes]] = []
    rejected: list[dict] = []
    for index, (data, filename) in enumerate(files):
        try:
            image = _build_image(
                settings, tenant, flags, options, batch, data=data, original_filename=filename
            )
        except FacequeueError as exc:
            rejected.append(
                {"index": index, "original_filename": filename, "code": exc.code.name, "message": exc.message}
            )
            continue
        built.append((index, image, data))
    keys = {image.dedupe_key for _, image, _ in built}
    jobs = {
        image.dedupe_key: image
        for image in session.execute(
            select(Image).where(Image.tenant_id == tenant.id, Image.dedupe_key.in_(keys))
        ).scalars()
    }
    owed_callbacks = [  # duplicates of earlier jobs now owe this upload its callback too
        image
        for image in jobs.values()
        if options.get("callback_url") and callbacks.add_url(image, options["callback_url"])
    ]
    new: dict[str, tuple[Image, bytes]] = {}
    for _, image, data in built:
        if image.dedupe_key not in jobs and image.dedupe_key not in new:
            new[image.dedupe_key] = (image, data)
    if new:
        queue = next(iter(new.values()))[0].queue
        queue_limiter().admit(session, tenant.id, queue, settings, count=len(new))
    for image, data in new.values():
        _prepare_new(session, settings, tenant, image, data)
        jobs[image.dedupe_key] = image
        session.add(image)
    try:
        session.commit()  # durable before any message
    except IntegrityError:  # a concurrent upload of some of the same bytes won the race: one by one
        session.rollback()
        return _create_one_by_one(
            session, settings, tenant, built, flags, options, batch, send_later
        ), rejected
    if batch:  # committed: the batch row exists
        known_batches.add((tenant.id, batch))
    for image, _ in new.values():
        _enqueue(image, send_later)
    for image in owed_callbacks:  # the outbox entries are committed: the reaper sends them if this is lost
        with contextlib.suppress(Exception):
            enqueue_callback(image.uid)
    return [(index, jobs[image.dedupe_key]) for index, image, _ in built], rejected


def _create_one_by_one(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    built: list[tuple[int, Image, bytes]],
    flags: str,
    options: dict,
    batch: str | None,
    send_later: BackgroundTasks | None,
) -> list[tuple[int, Image]]:
    return [
        (
            index,
            create_image_job(
                session,
                settings,
                tenant,
                data=data,
                detection_flags=flags,
                original_filename=image.original_filename,
                options=options,
                batch=batch,
                send_later=send_later,
            ),
        )
        for index, image, data in built
    ]


def _new_image(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    *,
    data: bytes | None = None,
    url: str | None = None,
    detection_flags: str | None = None,
    original_filename: str | None = None,
    options: dict | None = None,
    batch: str | None = None,
) -> Image:
    """Validate and build the row (not added), or return the tenant's existing duplicate job."""
    flags, options, batch = checked_job_settings(session, settings, tenant, detection_flags, options, batch)
    image = _build_image(
        settings, tenant, flags, options, batch, data=data, url=url, original_filename=original_filename
    )
    if image.dedupe_key is not None:
        existing = _find_duplicate(session, tenant, image.dedupe_key)
        if existing is not None:
            return existing  # a repeat adds no work: answered even when the queue is full
    queue_limiter().admit(session, tenant.id, image.queue, settings)
    _prepare_new(session, settings, tenant, image, data)
    return image


def checked_job_settings(
    session: Session,
    settings: Settings,
    tenant: Tenant,
    detection_flags: str | None,
    options: dict | None,
    batch: str | None,
) -> tuple[str, dict, str | None]:
    """The flags, options and batch name every job of one request shares, normalised and checked once."""
    flags = normalise_flags(detection_flags)
    options = {k: v for k, v in (options or {}).items() if v not in (None, "", [])}
    if options.get("callback_url"):
        validate_url(options["callback_url"], settings, "callback_url")
    if options.get("landmark_set") and options["landmark_set"] not in LANDMARK_SETS:
        raise FacequeueError(
            ErrorCode.INVALID_REQUEST, f"landmark_set must be one of {', '.join(LANDMARK_SETS)}"
        )
    if options.get("detection_mode") and options["detection_mode"] not in DETECTION_MODES:
        raise FacequeueError(
            ErrorCode.INVALID_REQUEST, f"detection_mode must be one of {', '.join(DETECTION_MODES)}"
        )
    if options.get("set_person_id"):
        assignable_person_id(options["set_person_id"])
    if options.get("recognize_targets") or options.get("parameters"):
        # The same checks as /v2/recognize: a bad target or parameter is refused now, not by the worker.
        check_recognition(
            session, tenant, [], options.get("recognize_targets") or [], options.get("parameters")
        )
    return flags, options, parse_batch_name(batch)


def _build_image(
    settings: Settings,
    tenant: Tenant,
    flags: str,
    options: dict,
    batch: str | None,
    *,
    data: bytes | None = None,
    url: str | None = None,
    original_filename: str | None = None,
) -> Image:
    """The row for one upload, from checked settings; no database access. Bad bytes raise here."""
    if original_filename is not None:
        check_text(original_filename, "original_filename", FILENAME_MAX_LENGTH)
    elif url is not None:  # the URL names the upload; a long one by its last path segment, to fit the column
        original_filename = url if len(url) <= FILENAME_MAX_LENGTH else _last_segment(url)
    image = Image(
        tenant_id=tenant.id,
        detection_flags=flags,
        original_filename=original_filename,
        options=options,
        batch=batch,
        queue=BULK_QUEUE if batch else IMAGES_QUEUE,
    )
    if data is not None:
        image.format, image.width, image.height = sniff(
            data, settings.max_upload_bytes, settings.max_image_pixels
        )
        image.sha256, image.size = sha256_hex(data), len(data)
        image.dedupe_key = f"{image.sha256}:{flags}{_outcome_options_digest(options)}"
    else:
        image.source_url = url  # checked by the caller, which knows the field's name
        if batch:  # within a batch a URL is one job: a resumed manifest never fetches it twice
            named = hashlib.sha256(f"{batch}\n{url}".encode()).hexdigest()
            image.dedupe_key = f"url:{named}:{flags}{_outcome_options_digest(options)}"
    return image


def _prepare_new(
    session: Session, settings: Settings, tenant: Tenant, image: Image, data: bytes | None
) -> None:
    """What a new (admitted, not duplicate) job needs before its row is added: its bytes and its batch."""
    if data is not None:  # a new job's bytes (brought back if the retention setting dropped them)
        put_blob(session, settings, data, image.sha256)
    if image.batch and (tenant.id, image.batch) not in known_batches:
        ensure_batch(session, tenant.id, image.batch)
    if image.options.get("callback_url"):
        image.callback_status = "pending"


def _enqueue(image: Image, send_later: BackgroundTasks | None = None) -> None:
    metrics.UPLOADS.labels(image.queue).inc()
    if send_later is not None:  # after the answer: the row is committed, the reaper covers a lost send
        send_later.add_task(_send, image.uid, image.queue)
    else:
        _send(image.uid, image.queue)


def _send(uid: str, queue: str) -> None:
    try:
        enqueue_image(uid, queue)
    except Exception:  # broker away: the job is safe in the database and the reaper will send it
        log.exception("could not enqueue image %s; the reaper will re-send it", uid)


def _last_segment(url: str) -> str:
    return (urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(url).hostname or "")[
        :FILENAME_MAX_LENGTH
    ]


def _outcome_options_digest(options: dict) -> str:
    """Options that change the outcome (enrolment, recognition) make an upload a different job."""
    outcome = {k: v for k, v in options.items() if k != "callback_url"}
    if not outcome:
        return ""
    return ":" + hashlib.sha256(json.dumps(outcome, sort_keys=True).encode()).hexdigest()[:16]


def _find_duplicate(session: Session, tenant: Tenant, dedupe_key: str | None) -> Image | None:
    return session.execute(
        select(Image).where(Image.tenant_id == tenant.id, Image.dedupe_key == dedupe_key)
    ).scalar_one_or_none()


def get_image(session: Session, tenant: Tenant, uid: str) -> Image:
    image = session.get(Image, uid) if is_uuid(uid) else None
    if image is None or image.tenant_id != tenant.id:  # another tenant's uid is as unknown as a made-up one
        raise FacequeueError(ErrorCode.NOT_FOUND)
    return image


def get_image_by_checksum(session: Session, tenant: Tenant, sha256: str) -> Image:
    image = session.execute(
        select(Image)
        .where(Image.tenant_id == tenant.id, Image.sha256 == sha256.lower())
        .order_by(Image.created_at.desc())
        .limit(1)
    ).scalar_one_or_none()
    if image is None:
        raise FacequeueError(ErrorCode.NOT_FOUND)
    return image
