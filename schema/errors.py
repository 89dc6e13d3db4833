"""Error codes: one table for the v1 int_response, the v2 code string and the HTTP status.

Every bad input a client can send maps to exactly one of these; README.md lists them.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    # (v1 int_response, HTTP status, default message)
    INTERNAL_ERROR = (-1, 500, "internal error")
    UNAUTHORIZED = (-2, 401, "missing or invalid api key")
    FORBIDDEN = (-3, 403, "this api key may not do that")
    INVALID_REQUEST = (-4, 422, "malformed request")
    NOT_FOUND = (-5, 404, "no such uid for this api key")
    EMPTY_IMAGE = (-10, 400, "empty image")
    BAD_BASE64 = (-11, 400, "image data is not valid base64")
    IMAGE_TOO_LARGE = (-12, 413, "image file larger than the upload limit")
    NOT_AN_IMAGE = (-13, 415, "not an image in a supported format (JPEG, PNG, WebP, BMP, GIF)")
    IMAGE_CORRUPT = (-14, 422, "image data is truncated or corrupt")
    IMAGE_TOO_MANY_PIXELS = (-15, 413, "image has more pixels than the limit")
    URL_INVALID = (-20, 400, "the URL is not a valid http(s) URL")
    URL_FORBIDDEN = (-21, 400, "the URL points at a private, loopback or link-local address")
    URL_UNREACHABLE = (-22, 502, "the URL could not be reached")
    URL_TIMEOUT = (-23, 504, "the URL answered too slowly")
    URL_TOO_LARGE = (-24, 413, "the URL's body is larger than the upload limit")
    URL_HTTP_ERROR = (-25, 502, "the URL answered with an HTTP error status")
    INVALID_PERSON_ID = (-30, 400, "person id must be name@namespace of letters, digits, spaces and . - ' _")
    INVALID_TARGET = (-31, 400, "recognition target is not a face uid, name@namespace or all@namespace")
    FACE_HAS_NO_EMBEDDING = (-32, 422, "face has no embedding for this profile")
    PROCESSING_FAILED = (-40, 500, "processing failed repeatedly")
    CANCELLED = (-41, 409, "cancelled before processing (DELETE /v2/batches/{name})")
    NOT_AVAILABLE = (-50, 501, "feature not available in this build")
    SERVICE_UNAVAILABLE = (-60, 503, "the database or the queue is briefly unavailable; retry shortly")
    RATE_LIMITED = (-61, 429, "too many requests per second for this api key; retry after Retry-After s")
    TOO_MANY_QUEUED = (-62, 429, "too many jobs queued for this api key; retry after Retry-After seconds")

    @property
    def v1(self) -> int:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @property
    def message(self) -> str:
        return self.value[2]

    @classmethod
    def from_v1(cls, number: int) -> ErrorCode:
        return next(code for code in cls if code.v1 == number)


class FacequeueError(Exception):
    """A client-visible failure with its code; raised anywhere, rendered by api and stored by workers."""

    def __init__(self, code: ErrorCode, message: str | None = None, retry_after: int | None = None) -> None:
        self.code = code
        self.message = message or code.message
        self.retry_after = retry_after  # seconds, answered as the Retry-After header (429s)
        super().__init__(f"{code.name}: {self.message}")


class JobStatus:
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    ERROR = "error"
