"""Python client for a facequeue server: `Client` (threads) and `AsyncClient` (asyncio), over httpx.

    from facequeue.client import Client
    client = Client()                          # FACEQUEUE_URL, FACEQUEUE_API_KEY from the environment
    media = client.upload("photo.jpg", flags="bestface").wait(timeout=60)
    for result in client.ingest(["a.jpg", "b.jpg"], concurrency=16, batch="archive"):
        print(result.source, result.status, len(result.faces))

Every request is retried with exponential backoff on 429, 5xx and connection errors, honouring the
server's Retry-After. Uploads are idempotent on the server (same bytes + flags + options per tenant
return the existing job), so a retried upload never makes a second job.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FINISHED = ("done", "error")
# Ingest asks the server to hold each upload's answer this long (?wait=; servers cap it, older ones ignore
# it): most images come back finished in the same request, and only the slow ones are polled.
SERVER_WAIT_S = 20.0
Source = str | Path | bytes


class FacequeueAPIError(Exception):
    """The server refused a request (after retries): the HTTP status and the v2 error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"HTTP {status} {code}: {message}")


class WaitTimeout(TimeoutError):
    """A job was still queued or processing when `wait(timeout=…)` ran out."""


@dataclass(frozen=True)
class Retry:
    """Backoff: base · 2^attempt seconds (jittered, capped); a Retry-After from the server wins."""

    attempts: int = 10
    base_s: float = 0.25
    max_s: float = 30.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = retry_after(response) if response is not None else None
        if after is not None:
            return min(after, 300.0)
        return min(self.max_s, self.base_s * 2**attempt) * random.uniform(0.5, 1.0)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# Typed results --------------------------------------------------------------------------------------------


@dataclass
class Face:
    face_uuid: str
    x: float
    y: float
    width: float
    height: float
    angle: float
    detection_score: float
    points: list[dict]
    tags: list[dict]
    person_id: str | None
    embedding: list[float] | None = None

    @classmethod
    def from_json(cls, data: dict) -> Face:
        return cls(
            face_uuid=data["face_uuid"],
            x=data["x"],
            y=data["y"],
            width=data["width"],
            height=data["height"],
            angle=data["angle"],
            detection_score=data["detection_score"],
            points=data.get("points") or [],
            tags=data.get("tags") or [],
            person_id=data.get("person_id"),
            embedding=data.get("embedding"),
        )

    def tag(self, name: str) -> str | None:
        return next((t["value"] for t in self.tags if t["name"] == name), None)


@dataclass
class Media:
    """GET /v2/media/{uuid}: the analysis of one image. `raw` is the answer as the server sent it."""

    media_uuid: str
    checksum: str | None
    status: str
    error: dict | None
    faces: list[Face]
    raw: dict = field(repr=False)

    @classmethod
    def from_json(cls, data: dict) -> Media:
        faces = [Face.from_json(face) for face in data.get("faces") or []]
        return cls(data["media_uuid"], data.get("checksum"), data["status"], data.get("error"), faces, data)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class RecognizeResult:
    recognize_uuid: str
    status: str
    error: dict | None
    results: list[dict]  # [{face_uuid, matches: [{face_uuid, person_id, confidence, is_match}]}]
    raw: dict = field(repr=False)

    @classmethod
    def from_json(cls, data: dict) -> RecognizeResult:
        return cls(data["recognize_uuid"], data["status"], data.get("error"), data.get("results") or [], data)


@dataclass
class IngestResult:
    """One line of `facequeue ingest --out`: source, sha256, media uuid, status, error, faces (v2 answer)."""

    source: str
    sha256: str | None
    media_uuid: str | None
    status: str  # done | error (server or client side) | skipped (done in an earlier run)
    error: dict | None = None
    faces: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "media_uuid": self.media_uuid,
            "status": self.status,
            "error": self.error,
            "faces": self.faces,
        }


@dataclass
class IngestItem:
    """A source with its own upload options (e.g. set_person_id for --person-from-folder)."""

    source: Source
    options: dict = field(default_factory=dict)
    name: str | None = None  # how the source is reported; default: the path or URL
    error: dict | None = None  # known bad before sending ({code, message}): reported as is, never sent


@dataclass
class Prepared:
    """An item ready to send: bytes and their SHA-256, or a URL."""

    item: IngestItem
    name: str
    data: bytes | None
    url: str | None
    sha256: str | None


def is_url(source: Source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def prepare(item: IngestItem) -> Prepared:
    source = item.source
    if isinstance(source, bytes):
        return Prepared(item, item.name or "<bytes>", source, None, hashlib.sha256(source).hexdigest())
    if is_url(source):
        return Prepared(item, item.name or str(source), None, str(source), None)
    data = Path(source).read_bytes()
    return Prepared(item, item.name or str(source), data, None, hashlib.sha256(data).hexdigest())


def media_request(prepared: Prepared, flags: str | None, options: dict) -> dict[str, Any]:
    """The POST for an upload. A file goes as multipart to /v2/media/file, named by its file name: no
    base64, so a third fewer bytes, and the api neither decodes nor scans a large JSON string. A URL, or
    bytes without a name, go as JSON to /v2/media."""
    fields = _fields(flags, options)
    if prepared.url:
        return {"path": "/v2/media", "json": {**fields, "file_uri": prepared.url}}
    if isinstance(prepared.item.source, bytes):
        encoded = base64.b64encode(prepared.data or b"").decode()
        return {"path": "/v2/media", "json": {**fields, "file_base64": encoded}}
    return {"path": "/v2/media/file", "data": _form(fields), "files": {"file": _part(prepared)}}


def files_request(files: list[Prepared], flags: str | None, options: dict) -> dict[str, Any]:
    """The multipart POST of several files (/v2/media/files), options as form fields, each file a part."""
    parts = [("file", _part(prepared)) for prepared in files]
    return {"path": "/v2/media/files", "data": _form(_fields(flags, options)), "files": parts}


def _fields(flags: str | None, options: dict) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if flags is not None:
        fields["detection_flags"] = flags
    return fields


def _form(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: ("true" if v is True else "false" if v is False else v) for k, v in fields.items()}


def _part(prepared: Prepared) -> tuple[str, bytes, str]:
    """A file as a multipart part, named by its file name."""
    return (Path(str(prepared.item.source)).name, prepared.data or b"", "application/octet-stream")


def _error_of(response: httpx.Response) -> FacequeueAPIError:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    return FacequeueAPIError(
        response.status_code,
        error.get("code") or f"HTTP_{response.status_code}",
        error.get("message") or response.text[:200],
    )


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    base_url = base_url or os.environ.get("FACEQUEUE_URL") or "http://127.0.0.1:8000"
    api_key = api_key or os.environ.get("FACEQUEUE_API_KEY")
    if not api_key:
        raise ValueError("no api key: pass api_key or set FACEQUEUE_API_KEY")
    return base_url.rstrip("/"), api_key


def _result(prepared: Prepared, media: Media) -> IngestResult:
    return IngestResult(
        source=prepared.name,
        sha256=media.checksum or prepared.sha256,
        media_uuid=media.media_uuid,
        status=media.status,
        error=media.error,
        faces=media.raw.get("faces") or [],
    )


def _failed(prepared: Prepared, code: str, message: str, media_uuid: str | None = None) -> IngestResult:
    return IngestResult(
        prepared.name, prepared.sha256, media_uuid, "error", {"code": code, "message": message}
    )


def _as_item(source: Source | IngestItem) -> IngestItem:
    return source if isinstance(source, IngestItem) else IngestItem(source)


def _job(kind: Any, client: Any, body: dict) -> Any:
    """A job from an upload answer: 202 (accepted) or, after ?wait=, 200 with the finished media."""
    job = kind(client, body["media_uuid"], body.get("checksum"), body["status"])
    if "faces" in body and body["status"] in FINISHED:
        job.media = Media.from_json(body)
    return job


# Hooks let a caller (the CLI's state file) skip finished items and record uploads before waiting.
SkipHook = Callable[[Prepared], IngestResult | None]
QuickSkipHook = Callable[[IngestItem], IngestResult | None]
UploadedHook = Callable[[Prepared, str], None]


# Synchronous client ---------------------------------------------------------------------------------------


@dataclass
class Job:
    """An accepted upload. `wait()` polls until done or error."""

    client: Client
    media_uuid: str
    checksum: str | None
    status: str
    media: Media | None = None  # the finished answer, when the upload waited for it (`wait=`)

    def refresh(self, embeddings: bool = False) -> Media:
        media = self.client.media(self.media_uuid, embeddings=embeddings)
        self.status = media.status
        return media

    def wait(self, timeout: float = 300, poll_s: float = 0.1, embeddings: bool = False) -> Media:
        if self.media is not None and not embeddings:
            return self.media
        deadline = time.monotonic() + timeout
        while True:
            media = self.refresh(embeddings)
            if media.finished:
                return media
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"media {self.media_uuid} still {media.status} after {timeout}s")
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            poll_s = min(poll_s * 1.5, 2.0)


class Client:
    """A pooled HTTP client (thread-safe: ingest uses it from many threads)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry = Retry(),
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.retry = retry
        self.http = httpx.Client(
            base_url=self.base_url,
            headers={"X-API-Key": self.api_key},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call with retries; the decoded JSON, or FacequeueAPIError."""
        for attempt in range(self.retry.attempts + 1):
            response = None
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retry.attempts:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retry.attempts:
                    break
            time.sleep(self.retry.delay(attempt, response))
        if response.is_error:
            raise _error_of(response)
        return response.json()

    # media
    def upload(
        self, source: Source, flags: str | None = None, *, wait: float | None = None, **options: Any
    ) -> Job:
        """Queue an image (a path, bytes or an http(s) URL). Options: batch, set_person_id, callback_url,
        recognize_targets, recognize_parameters, landmark_set, quality_checks, original_filename.
        `wait`: let the server hold the answer up to that many seconds (its ?wait=) so a quick job comes
        back finished, with no polling; `job.wait()` then returns at once."""
        return self._upload(prepare(IngestItem(source)), flags, options, wait)

    def _upload(self, prepared: Prepared, flags: str | None, options: dict, wait: float | None = None) -> Job:
        params = {"wait": wait} if wait else None
        body = self.request("POST", **media_request(prepared, flags, options), params=params)
        return _job(Job, self, body)

    def media(self, media_uuid: str, embeddings: bool = False) -> Media:
        params = {"embeddings": "true"} if embeddings else None
        return Media.from_json(self.request("GET", f"/v2/media/{media_uuid}", params=params))

    def job(self, media_uuid: str) -> Job:
        return Job(self, media_uuid, None, "queued")

    # persons and recognition
    def person(self, face_uuids: list[str], person_id: str) -> str | None:
        """Assign faces to `name@namespace` (created if new); an empty id unassigns."""
        body = self.request("POST", "/v2/person", json={"faces_uuids": face_uuids, "person_id": person_id})
        return body["person_id"]

    def persons(self, person_id: str) -> list[dict]:
        """`name@ns` or `all@ns`: each person with its face uuids."""
        return self.request("GET", "/v2/person", params={"person_id": person_id})["persons"]

    def recognize(
        self, face_uuids: list[str], targets: list[str], parameters: str | None = None, timeout: float = 60
    ) -> RecognizeResult:
        """Queue a recognition and wait for its matches."""
        body = {"faces_uuids": face_uuids, "targets": targets, "parameters": parameters}
        uid = self.request("POST", "/v2/recognize", json=body)["recognize_uuid"]
        deadline, poll_s = time.monotonic() + timeout, 0.1
        while True:
            result = RecognizeResult.from_json(self.request("GET", f"/v2/recognize/{uid}"))
            if result.status in FINISHED:
                return result
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"recognition {uid} still {result.status} after {timeout}s")
            time.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 2.0)

    # batches
    def batch(self, name: str) -> dict:
        return self.request("GET", f"/v2/batches/{name}")

    def set_batch(self, name: str, callback_url: str | None = None) -> dict:
        return self.request("PUT", f"/v2/batches/{name}", json={"callback_url": callback_url})

    def cancel_batch(self, name: str) -> dict:
        return self.request("DELETE", f"/v2/batches/{name}")

    def batch_urls(self, name: str, urls: list[str], flags: str | None = None, **options: Any) -> dict:
        body = {"urls": urls, "detection_flags": flags, **options}
        return self.request("POST", f"/v2/batches/{name}/urls", json=body)

    def batch_results(self, name: str, embeddings: bool = False, page: int = 200) -> Iterator[dict]:
        """Every media answer of the batch, page by page."""
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": page, "embeddings": str(embeddings).lower()}
            if cursor:
                params["cursor"] = cursor
            body = self.request("GET", f"/v2/batches/{name}/results", params=params)
            yield from body["results"]
            if not (cursor := body["next_cursor"]):
                return

    def namespace_faces(self, namespace: str, embeddings: bool = False, page: int = 200) -> Iterator[dict]:
        """Every enrolled face of a namespace, with its person and media uuid."""
        cursor = 0
        while True:
            params = {
                "namespace": namespace,
                "cursor": cursor,
                "limit": page,
                "embeddings": str(embeddings).lower(),
            }
            body = self.request("GET", "/v2/faces", params=params)
            yield from body["faces"]
            if (cursor := body["next_cursor"]) is None:
                return

    # ingestion
    def ingest(
        self,
        sources: Iterable[Source | IngestItem],
        flags: str | None = None,
        *,
        concurrency: int = 16,
        per_request: int = 8,
        timeout: float = 600,
        skip: SkipHook | None = None,
        on_uploaded: UploadedHook | None = None,
        quick_skip: QuickSkipHook | None = None,
        **options: Any,
    ) -> Iterator[IngestResult]:
        """Upload and wait for every source, about `concurrency` images in flight; yield results as they
        complete.

        Files go `per_request` to a request (POST /v2/media/files: the request's fixed costs are paid once
        per group, and one answer brings the group's results); URLs and bytes go one by one. A source
        that cannot be read or is refused becomes an error result; the others go on. `skip` (called
        after hashing, from the pool's threads) may answer an item from elsewhere, e.g. a state file of
        an earlier run; `quick_skip` may do so before the file is even read; `on_uploaded` is told each
        accepted media uuid before any wait beyond the upload's own.
        """
        per_request = max(1, min(per_request, concurrency))
        hooks = (flags, options, timeout, skip, on_uploaded, quick_skip)
        threads = max(1, -(-concurrency // per_request))
        pending: set[Future[list[IngestResult]]] = set()
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest")
        try:
            for group in _groups(sources, per_request):  # lazily: a manifest is never held in memory
                pending.add(pool.submit(self._ingest_group, group, *hooks))
                if len(pending) >= threads * 2:
                    done, pending = _some_done(pending)
                    yield from (result for future in done for result in future.result())
            while pending:
                done, pending = _some_done(pending)
                yield from (result for future in done for result in future.result())
        finally:  # Ctrl-C or a consumer that stops early: drop what has not started, do not wait
            pool.shutdown(wait=False, cancel_futures=True)

    def _ingest_group(
        self,
        group: list[IngestItem],
        flags: str | None,
        options: dict,
        timeout: float,
        skip: SkipHook | None,
        on_uploaded: UploadedHook | None,
        quick_skip: QuickSkipHook | None,
    ) -> list[IngestResult]:
        """The results of a group (files with the same options, or one URL or bytes item), in order."""
        results: list[IngestResult | None] = [None] * len(group)
        to_send: list[tuple[int, Prepared]] = []
        for index, item in enumerate(group):
            earlier = quick_skip(item) if quick_skip is not None else None
            earlier = earlier or _unsendable(item)
            if earlier is None:
                try:
                    prepared = prepare(item)
                except OSError as exc:
                    earlier = _unreadable(item, exc)
                else:
                    earlier = skip(prepared) if skip is not None else None
                    if earlier is None:
                        to_send.append((index, prepared))
            results[index] = earlier
        if to_send:
            sent = [prepared for _, prepared in to_send]
            merged = {**options, **group[0].options}  # a group's items share their options
            wait = min(SERVER_WAIT_S, timeout)
            try:
                if _is_file(group[0]):
                    jobs: list[Job | FacequeueAPIError] = self._upload_files(sent, flags, merged, wait)
                else:  # a URL or bytes: a group of one
                    jobs = [self._upload(sent[0], flags, merged, wait)]
            except Exception as exc:  # the whole request failed: every item of it, with the same error
                jobs = [exc] * len(sent)  # type: ignore[list-item]
            for (index, prepared), job in zip(to_send, jobs, strict=True):
                results[index] = self._finish(prepared, job, timeout, on_uploaded)
        return results  # type: ignore[return-value]

    def _upload_files(
        self, files: list[Prepared], flags: str | None, options: dict, wait: float | None = None
    ) -> list[Job | FacequeueAPIError]:
        """POST /v2/media/files: one job (or the file's own error) per file, in order."""
        params = {"wait": wait} if wait else None
        body = self.request("POST", **files_request(files, flags, options), params=params)
        return _files_answer(Job, self, body, len(files))

    def _finish(
        self, prepared: Prepared, job: Job | Exception, timeout: float, on_uploaded: UploadedHook | None
    ) -> IngestResult:
        """One item's result once uploaded: waited for (unless the upload's answer already had it), or
        the upload's error."""
        if isinstance(job, Exception):
            return _failure(prepared, job, None)
        try:
            if on_uploaded is not None:
                on_uploaded(prepared, job.media_uuid)
            return _result(prepared, job.wait(timeout=timeout))
        except Exception as exc:  # one odd answer must not end a million-image run; it is reported
            return _failure(prepared, exc, job.media_uuid)


def _failure(prepared: Prepared, exc: Exception, media_uuid: str | None) -> IngestResult:
    """An item's error result from what its upload or its wait raised."""
    if isinstance(exc, FacequeueAPIError):
        return _failed(prepared, exc.code, exc.message, media_uuid)
    if isinstance(exc, WaitTimeout):
        return _failed(prepared, "WAIT_TIMEOUT", str(exc), media_uuid)
    if isinstance(exc, httpx.TransportError):
        return _failed(prepared, "CONNECTION_FAILED", f"{type(exc).__name__}: {exc}")
    log.error("ingest of %s failed", prepared.name, exc_info=exc)
    return _failed(prepared, "CLIENT_ERROR", f"{type(exc).__name__}: {exc}")


async def _finish_async(prepared: Prepared, job: Any, timeout: float) -> IngestResult:
    """`Client._finish` for `AsyncClient.ingest`."""
    if isinstance(job, Exception):
        return _failure(prepared, job, None)
    try:
        return _result(prepared, await job.wait(timeout=timeout))
    except Exception as exc:
        return _failure(prepared, exc, job.media_uuid)


def _files_answer(kind: Any, client: Any, body: dict, count: int) -> list[Any]:
    """The jobs of a /v2/media/files answer, in the request's order; a refused file as its error."""
    jobs: list[Any] = [FacequeueAPIError(0, "CLIENT_ERROR", "not in the answer")] * count
    for entry in body["accepted"]:
        jobs[entry["index"]] = _job(kind, client, entry)
    for entry in body["rejected"]:  # a file's own refusal has no HTTP status of its own: 0
        jobs[entry["index"]] = FacequeueAPIError(0, entry["code"], entry["message"])
    return jobs


def _unsendable(item: IngestItem) -> IngestResult | None:
    """The result of an item known bad before sending (its own error), else None."""
    if item.error:
        return IngestResult(item.name or str(item.source), None, None, "error", item.error)
    return None


def _unreadable(item: IngestItem, exc: OSError) -> IngestResult:
    return IngestResult(str(item.source), None, None, "error", {"code": "UNREADABLE", "message": str(exc)})


def _is_file(item: IngestItem) -> bool:
    """A path (sent as multipart, in groups); not a URL or bytes (sent one by one)."""
    return not (isinstance(item.source, bytes) or is_url(item.source))


def _groups(sources: Iterable[Source | IngestItem], size: int) -> Iterator[list[IngestItem]]:
    """Consecutive files with the same options, up to `size` a group (one multi-file request); a URL or
    bytes item alone."""
    group: list[IngestItem] = []
    for source in sources:
        item = _as_item(source)
        if not _is_file(item):
            if group:
                yield group
                group = []
            yield [item]
            continue
        if group and (len(group) >= size or item.options != group[0].options):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _some_done(pending: set[Future[IngestResult]]) -> tuple[set, set]:
    """Wait for at least one future, waking every second: a SIGINT that the kernel handed to a pool
    thread only runs its Python handler when the main thread runs again."""
    while True:
        done, left = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
        if done:
            return done, left


# Asynchronous client --------------------------------------------------------------------------------------


@dataclass
class AsyncJob:
    client: AsyncClient
    media_uuid: str
    checksum: str | None
    status: str
    media: Media | None = None

    async def wait(self, timeout: float = 300, poll_s: float = 0.1, embeddings: bool = False) -> Media:
        if self.media is not None and not embeddings:
            return self.media
        deadline = time.monotonic() + timeout
        while True:
            media = await self.client.media(self.media_uuid, embeddings=embeddings)
            self.status = media.status
            if media.finished:
                return media
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"media {self.media_uuid} still {media.status} after {timeout}s")
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            poll_s = min(poll_s * 1.5, 2.0)


class AsyncClient:
    """The asyncio twin of `Client` (same retries, same results)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: Retry = Retry(),
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.retry = retry
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"X-API-Key": self.api_key},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retry.attempts + 1):
            response = None
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.retry.attempts:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retry.attempts:
                    break
            await asyncio.sleep(self.retry.delay(attempt, response))
        if response.is_error:
            raise _error_of(response)
        return response.json()

    async def upload(
        self, source: Source, flags: str | None = None, *, wait: float | None = None, **options: Any
    ) -> AsyncJob:
        prepared = await asyncio.to_thread(prepare, IngestItem(source))
        return await self._upload(prepared, flags, options, wait)

    async def _upload(
        self, prepared: Prepared, flags: str | None, options: dict, wait: float | None = None
    ) -> AsyncJob:
        params = {"wait": wait} if wait else None
        body = await self.request("POST", **media_request(prepared, flags, options), params=params)
        return _job(AsyncJob, self, body)

    async def media(self, media_uuid: str, embeddings: bool = False) -> Media:
        params = {"embeddings": "true"} if embeddings else None
        return Media.from_json(await self.request("GET", f"/v2/media/{media_uuid}", params=params))

    async def person(self, face_uuids: list[str], person_id: str) -> str | None:
        body = {"faces_uuids": face_uuids, "person_id": person_id}
        return (await self.request("POST", "/v2/person", json=body))["person_id"]

    async def persons(self, person_id: str) -> list[dict]:
        return (await self.request("GET", "/v2/person", params={"person_id": person_id}))["persons"]

    async def recognize(
        self, face_uuids: list[str], targets: list[str], parameters: str | None = None, timeout: float = 60
    ) -> RecognizeResult:
        body = {"faces_uuids": face_uuids, "targets": targets, "parameters": parameters}
        uid = (await self.request("POST", "/v2/recognize", json=body))["recognize_uuid"]
        deadline, poll_s = time.monotonic() + timeout, 0.1
        while True:
            result = RecognizeResult.from_json(await self.request("GET", f"/v2/recognize/{uid}"))
            if result.status in FINISHED:
                return result
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"recognition {uid} still {result.status} after {timeout}s")
            await asyncio.sleep(poll_s)
            poll_s = min(poll_s * 1.5, 2.0)

    async def batch(self, name: str) -> dict:
        return await self.request("GET", f"/v2/batches/{name}")

    async def cancel_batch(self, name: str) -> dict:
        return await self.request("DELETE", f"/v2/batches/{name}")

    async def _upload_files(
        self, files: list[Prepared], flags: str | None, options: dict, wait: float | None = None
    ) -> list[AsyncJob | FacequeueAPIError]:
        params = {"wait": wait} if wait else None
        body = await self.request("POST", **files_request(files, flags, options), params=params)
        return _files_answer(AsyncJob, self, body, len(files))

    async def ingest(
        self,
        sources: Iterable[Source | IngestItem],
        flags: str | None = None,
        *,
        concurrency: int = 16,
        per_request: int = 8,
        timeout: float = 600,
        **options: Any,
    ) -> AsyncIterator[IngestResult]:
        """Upload and wait for every source, about `concurrency` images in flight, files `per_request` to
        a request (as `Client.ingest`); yield results as they complete."""
        per_request = max(1, min(per_request, concurrency))
        wait = min(SERVER_WAIT_S, timeout)

        async def group_results(group: list[IngestItem]) -> list[IngestResult]:
            results: list[IngestResult | None] = [None] * len(group)
            to_send: list[tuple[int, Prepared]] = []
            for index, item in enumerate(group):
                results[index] = _unsendable(item)
                if results[index] is None:
                    try:
                        to_send.append((index, await asyncio.to_thread(prepare, item)))
                    except OSError as exc:
                        results[index] = _unreadable(item, exc)
            if to_send:
                sent = [prepared for _, prepared in to_send]
                merged = {**options, **group[0].options}  # a group's items share their options
                try:
                    if _is_file(group[0]):
                        jobs: list[Any] = await self._upload_files(sent, flags, merged, wait)
                    else:  # a URL or bytes: a group of one
                        jobs = [await self._upload(sent[0], flags, merged, wait)]
                except Exception as exc:  # the whole request failed: every item of it, with the same error
                    jobs = [exc] * len(sent)
                for (index, prepared), job in zip(to_send, jobs, strict=True):
                    results[index] = await _finish_async(prepared, job, timeout)
            return results  # type: ignore[return-value]

        pending: set[asyncio.Task[list[IngestResult]]] = set()
        for group in _groups(sources, per_request):
            pending.add(asyncio.create_task(group_results(group)))
            if len(pending) * per_request >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    for result in task.result():
                        yield result
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                for result in task.result():
                    yield result
