"""Request dependencies: database session and tenant authentication."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api.limits import rate_limiter
from facequeue.settings import get_settings
from schema.db import connect, session_scope
from schema.errors import ErrorCode, FacequeueError
from schema.inputs import check_text
from schema.tables import ApiKey, Tenant


def db() -> Iterator[Session]:
    with session_scope() as session:
        connect(session, get_settings().outage_wait_s)  # a restarting database: wait a moment, not 500
        yield session


# The transaction ends before the answer is sent ("function" scope): a read right after an "ok" sees the
# write, and a commit that fails becomes an error answer, never an "ok".
Db = Annotated[Session, Depends(db, scope="function")]
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def check_request_strings(request: Request) -> None:
    """schema.inputs' rule for the strings that are not in a JSON body: the decoded path, path parameters,
    query parameters and form fields (names and values; an uploaded file's name; form values are checked for
    characters, their lengths by the route, since a form may carry a base64 image). A dependency of the whole
    app, so every route, present and future, has it. JSON bodies are checked by schema.inputs.WireModel."""
    check_text(request.url.path, "the path")
    for name, value in request.path_params.items():
        check_text(str(value), f"path parameter {name[:40]}")
    for name, value in request.query_params.multi_items():
        check_text(name, "a query parameter name")
        check_text(value, f"query parameter {name}")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() in FORM_TYPES:
        form = await request.form()  # parsed once: FastAPI has already read it for the route
        for name, value in form.multi_items():
            check_text(name, "a form field name")
            if isinstance(value, UploadFile):
                check_text(value.filename or "", f"the file name of {name}")
            else:  # characters only: a form may carry base64 images; lengths are the route's (and BodyLimit's)
                check_text(value, f"form field {name}", max_length=len(value))


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# key sha256 -> (looked up at, a detached copy of the tenant). Saves a query per request.
_key_cache: dict[str, tuple[float, Tenant]] = {}
_key_cache_lock = threading.Lock()


def _tenant_for(session: Session, digest: str, ttl: float) -> Tenant | None:
    now = time.monotonic()
    cached = _key_cache.get(digest)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    api_key = session.execute(
        select(ApiKey).where(ApiKey.key_sha256 == digest, ApiKey.revoked.is_(False))
    ).scalar_one_or_none()
    if api_key is None:
        return None
    found = api_key.tenant
    # A plain copy, bound to no session: safe to share between requests and threads.
    tenant = Tenant(id=found.id, name=found.name, is_admin=found.is_admin, created_at=found.created_at)
    if ttl > 0:
        with _key_cache_lock:
            if len(_key_cache) > 10_000:
                _key_cache.clear()
            _key_cache[digest] = (now, tenant)
    return tenant


def authenticate(session: Session, request: Request, body_key: str | None = None) -> Tenant:
    """The key comes as the X-API-Key header, or as api_key in the query or the body (Betaface style).

    Every authenticated request counts against the tenant's requests/s limit (429 when over it)."""
    key = request.headers.get("x-api-key") or request.query_params.get("api_key") or body_key
    if not key:
        raise FacequeueError(ErrorCode.UNAUTHORIZED)
    settings = get_settings()
    tenant = _tenant_for(session, key_sha256(key), settings.api_key_cache_s)
    if tenant is None:
        raise FacequeueError(ErrorCode.UNAUTHORIZED)
    rate_limiter().hit(tenant.id, settings.tenant_max_requests_per_s)
    return tenant
