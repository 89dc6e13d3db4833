"""Durable callbacks: the pending state in the database is the outbox.

The transaction that stores a finished job also marks its callback due (`callback_next_at`), so no crash
or broker outage between the two can lose it. The worker then sends a `deliver_callback` message at once;
the reaper sends one for every due callback whose message is missing (worker killed before sending it,
broker restarted, worker killed mid-POST: its delivery lease lapses). A delivery claims the row by moving
`callback_next_at` past its own lease, so one POST runs at a time and duplicate messages do nothing.
Failures back off (10 s, 20 s, 40 s, ...) until `callback_max_attempts`, then the callback is `failed`.

Delivery is at least once: a worker killed after the receiver answered but before `sent` was stored
sends again. Every POST carries `Idempotency-Key: <uid>:<status>`, the same on every retry.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from facequeue.settings import Settings
from schema.errors import JobStatus
from schema.tables import Image, utcnow

PENDING, SENT, FAILED = "pending", "sent", "failed"
FINISHED = (JobStatus.DONE, JobStatus.ERROR)


def idempotency_key(image: Image) -> str:
    return f"{image.uid}:{image.status}"


def backoff_s(attempt: int) -> int:
    return min(600, 10 * 2 ** (attempt - 1))


def lease_s(settings: Settings) -> float:
    """Longer than one POST can take; a delivery still unrecorded after this is presumed dead."""
    return settings.job_lease_s + 2 * settings.url_timeout_s


def urls(image: Image) -> list[str]:
    """Where the result goes: the upload's callback_url, then those of later uploads that deduped onto it."""
    first = image.options.get("callback_url")
    return ([first] if first else []) + list(image.options.get("more_callback_urls", []))


def add_url(image: Image, url: str) -> bool:
    """A later upload of the same image names a callback: it is owed the result too. Returns True when a
    delivery is due now (the job already finished); otherwise the job's finish makes it due."""
    if url in urls(image) and image.callback_status in (PENDING, SENT):
        return False  # already owed, or already delivered, to that address
    if not image.options.get("callback_url"):
        image.options = {**image.options, "callback_url": url}
    elif url not in urls(image):
        image.options = {
            **image.options,
            "more_callback_urls": [*image.options.get("more_callback_urls", []), url],
        }
    # Deliver to the addresses still owed the result: those not yet sent to.
    image.callback_status, image.callback_attempts, image.callback_error = PENDING, 0, None
    if image.status in FINISHED:
        image.callback_next_at = utcnow()
        return True
    return False


def delivered(image: Image, url: str) -> None:
    """Remember an address that has the result, so a later retry or a new address does not resend it."""
    if url not in image.options.get("callback_sent", []):
        image.options = {**image.options, "callback_sent": [*image.options.get("callback_sent", []), url]}


def owed(image: Image) -> list[str]:
    return [url for url in urls(image) if url not in image.options.get("callback_sent", [])]


def make_due(image: Image) -> None:
    """In the transaction that finishes the job: the callback is now owed."""
    image.callback_status = PENDING
    image.callback_next_at = utcnow()


def _due():  # type: ignore[no-untyped-def]
    return (
        (Image.callback_status == PENDING) & Image.status.in_(FINISHED) & (Image.callback_next_at <= utcnow())
    )


def claim(session: Session, uid: str, settings: Settings) -> Image | None:
    """Take a due delivery (one more attempt, leased); None when not due (sent, backing off, or taken)."""
    result = session.execute(
        update(Image)
        .execution_options(synchronize_session=False)
        .where(Image.uid == uid, _due())
        .values(
            callback_attempts=Image.callback_attempts + 1,
            callback_next_at=utcnow() + timedelta(seconds=lease_s(settings)),
        )
    )
    return session.get(Image, uid, populate_existing=True) if result.rowcount else None


def record(
    session: Session, uid: str, attempt: int, error: str | None, settings: Settings, sent_to: list[str] = ()
) -> str:
    """Store the outcome of our attempt, unless a later attempt took over (our lease lapsed); `sent_to`
    are the addresses that took the result (a partial success is remembered, the rest retried)."""
    image = session.execute(
        select(Image)
        .where(Image.uid == uid, Image.callback_status == PENDING, Image.callback_attempts == attempt)
        .with_for_update()
    ).scalar_one_or_none()
    if image is None:
        return "superseded"
    for url in sent_to:
        delivered(image, url)
    image.callback_error = error
    if error is None:
        image.callback_status, image.callback_next_at = SENT, None
    elif attempt >= settings.callback_max_attempts:
        image.callback_status, image.callback_next_at = FAILED, None
    else:
        image.callback_next_at = utcnow() + timedelta(seconds=backoff_s(attempt))
    return image.callback_status


def count_due(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Image).where(_due())).scalar_one()


def oldest_due(session: Session, limit: int) -> list[str]:
    return list(
        session.execute(
            select(Image.uid).where(_due()).order_by(Image.callback_next_at).limit(limit)
        ).scalars()
    )
