"""Request dependencies: database session and tenant authentication."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from facequeue.settings import get_settings
from schema.db import connect, session_scope
from schema.errors import ErrorCode, FacequeueError
from schema.tables import ApiKey, Tenant


def db() -> Iterator[Session]:
    with session_scope() as session:
        connect(session, get_settings().outage_wait_s)  # a restarting database: wait a moment, not 500
        yield session


# The transaction ends before the answer is sent ("function" scope): a read right after an "ok" sees the
# write, and a commit that fails becomes an error answer, never an "ok".
Db = Annotated[Session, Depends(db, scope="function")]


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(session: Session, request: Request, body_key: str | None = None) -> Tenant:
    """The key comes as the X-API-Key header, or as api_key in the query or the body (Betaface style)."""
    key = request.headers.get("x-api-key") or request.query_params.get("api_key") or body_key
    if not key:
        raise FacequeueError(ErrorCode.UNAUTHORIZED)
    api_key = session.execute(
        select(ApiKey).where(ApiKey.key_sha256 == key_sha256(key), ApiKey.revoked.is_(False))
    ).scalar_one_or_none()
    if api_key is None:
        raise FacequeueError(ErrorCode.UNAUTHORIZED)
    return api_key.tenant
