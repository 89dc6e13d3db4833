"""The shapes of the api's answers, for the OpenAPI document (/docs, /redoc) and for tests.

Routes build their answers with `schema.wire`; these models describe them (the integration tests validate
real answers against them, so the document cannot drift from what the service sends). Extra fields are
allowed: a client must ignore fields it does not know.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(Answer):
    code: str = Field(description="one of the error codes in the README, e.g. INVALID_REQUEST")
    message: str


class ErrorEnvelope(Answer):
    """Every v2 error: the HTTP status and this body."""

    error: ErrorBody


class Point(Answer):
    x: float
    y: float
    type: int = Field(description="Betaface point type id (e.g. 512 basic eye left)")
    name: str


class Tag(Answer):
    name: str
    value: str
    confidence: float


class Face(Answer):
    face_uuid: str
    x: float = Field(description="centre of the box, pixels of the image after EXIF orientation")
    y: float
    width: float
    height: float
    angle: float = Field(description="in-plane rotation of the eye line, degrees, clockwise positive")
    detection_score: float
    points: list[Point]
    tags: list[Tag]
    person_id: str | None
    embedding: list[float] | None = Field(None, description="with ?embeddings=true")
    embedding_model: str | None = None


class MediaAccepted(Answer):
    media_uuid: str
    checksum: str | None = Field(description="SHA-256 of the file (null for a URL not fetched yet)")
    status: str = Field(description="queued, processing, done or error")


class Nsfw(Answer):
    score: float = Field(description="open_nsfw probability that the image is not safe for work, 0-1")
    label: str = Field(description="nsfw at or above FACEQUEUE_NSFW_THRESHOLD, else sfw")


class Media(Answer):
    media_uuid: str
    checksum: str | None
    status: str
    error: ErrorBody | None
    original_filename: str | None
    width: int | None
    height: int | None
    detection_flags: str
    faces: list[Face]
    recognize_uuid: str | None
    quality_checks: list[str] | None
    batch: str | None = Field(None, description="the batch the upload named, if any")
    nsfw: Nsfw | None = Field(None, description="with the `nsfw` flag: the whole image's NSFW score")


class MediaFileEntry(Media):
    """One file of a multi-file upload: its job's answer (the finished media, or as accepted: media_uuid,
    checksum and status only), with the file's place in the request."""

    index: int = Field(description="the file's position among the request's `file` parts, from 0")
    error: ErrorBody | None = None
    original_filename: str | None = None
    width: int | None = None
    height: int | None = None
    detection_flags: str | None = None
    faces: list[Face] | None = None
    recognize_uuid: str | None = None
    quality_checks: list[str] | None = None


class FileRejected(Answer):
    index: int
    original_filename: str | None
    code: str
    message: str


class MediaFiles(Answer):
    accepted: list[MediaFileEntry]
    rejected: list[FileRejected]


class Person(Answer):
    person_id: str
    faces_uuids: list[str]


class Persons(Answer):
    persons: list[Person]


class PersonSet(Answer):
    person_id: str | None
    faces_uuids: list[str]


class RecognizeAccepted(Answer):
    recognize_uuid: str


class Match(Answer):
    face_uuid: str
    person_id: str | None
    confidence: float = Field(description="calibrated probability of the same person, 0-1")
    is_match: bool
    distance: float | None = None


class FaceMatches(Answer):
    face_uuid: str
    matches: list[Match]


class Recognition(Answer):
    recognize_uuid: str
    status: str
    error: ErrorBody | None
    results: list[FaceMatches]


class MediaItem(Answer):
    media_uuid: str
    status: str
    original_filename: str | None
    created_at: str
    faces: int


class MediaList(Answer):
    media: list[MediaItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class Deleted(Answer):
    deleted: str
    faces_deleted: int | None = None
    faces_unassigned: int | None = None
    persons_deleted: int | None = None


class NamespaceInfo(Answer):
    namespace: str
    persons: int
    faces: int


class Namespaces(Answer):
    namespaces: list[NamespaceInfo]


class Usage(Answer):
    tenants: dict[str, dict]


class BatchCounts(Answer):
    queued: int
    processing: int
    done: int
    error: int = Field(description="ended in error, cancelled ones apart")
    cancelled: int = Field(description="still queued when the batch was cancelled (error code CANCELLED)")


class BatchSummary(Answer):
    batch: str
    total: int
    counts: BatchCounts
    faces: int = Field(description="faces found in the batch's images")
    drained: bool = Field(description="nothing queued or processing")
    created_at: str
    started_at: str | None = Field(description="first upload")
    updated_at: str | None
    first_finished_at: str | None
    last_finished_at: str | None
    images_per_s: float | None = Field(description="finished images over first upload → last finish")
    faces_per_s: float | None
    callback_url: str | None
    callback_status: str | None = Field(description="null (not fired), pending, sent or failed")
    callback_error: str | None


class BatchList(Answer):
    batches: list[BatchSummary] = Field(description="the tenant's batches, newest first")
    next_cursor: int | None = Field(description="pass back as cursor for the next page; null on the last")


class QueueDepths(Answer):
    broker: str = Field(description='"ok" or "error: <kind>" (then queues is null)')
    queues: dict[str, int] | None = Field(description="messages waiting in each broker queue")
    images: dict[str, int] = Field(description="image jobs by status, all tenants (database)")
    recognitions: dict[str, int] = Field(description="recognition jobs by status, all tenants (database)")


class BatchCancelled(BatchSummary):
    cancelled: int = Field(description="images this request cancelled")


class BatchResults(Answer):
    batch: str
    results: list[Media]
    next_cursor: str | None = Field(description="pass back as cursor for the next page; null on the last")


class UrlAccepted(Answer):
    url: str
    media_uuid: str
    status: str


class UrlRejected(Answer):
    index: int
    url: str
    code: str
    message: str


class BatchUrls(Answer):
    batch: str
    accepted: list[UrlAccepted]
    rejected: list[UrlRejected]


class NamespaceFace(Face):
    media_uuid: str


class NamespaceFaces(Answer):
    namespace: str
    faces: list[NamespaceFace]
    next_cursor: int | None


class V1Answer(Answer):
    """Betaface v1: always HTTP 200; int_response 0 = ok, 1 = still in the queue, negative = error."""

    int_response: int
    string_response: str


# What every v2 route may answer besides success (v1 routes answer errors on HTTP 200 as V1Answer).
ERRORS: dict[int | str, dict] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in {
        400: "bad input (EMPTY_IMAGE, BAD_BASE64, URL_INVALID, INVALID_PERSON_ID, INVALID_TARGET, …)",
        401: "UNAUTHORIZED: missing or unknown API key",
        403: "FORBIDDEN",
        404: "NOT_FOUND: unknown uid (or another tenant's)",
        413: "IMAGE_TOO_LARGE, IMAGE_TOO_MANY_PIXELS, URL_TOO_LARGE",
        415: "NOT_AN_IMAGE",
        422: "INVALID_REQUEST: malformed JSON, missing fields, bad parameters",
        429: "RATE_LIMITED, TOO_MANY_QUEUED: over the tenant's admission limits; retry after `Retry-After` s",
        500: "INTERNAL_ERROR",
        503: "SERVICE_UNAVAILABLE: the database or the broker is briefly away; retry after Retry-After",
    }.items()
}
