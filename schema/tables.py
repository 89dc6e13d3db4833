"""SQLAlchemy 2 tables: the durable state shared by api and workers. Postgres in production, SQLite embedded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uid() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    # Only the SHA-256 of a key is stored; the key itself is shown once, when created.
    key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    tenant: Mapped[Tenant] = relationship(lazy="joined")


class Blob(Base):
    """Original image bytes, content-addressed. `data` is NULL when kept elsewhere or dropped."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # Deferred: locking or checking a blob row must not read its bytes back.
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    store: Mapped[str] = mapped_column(String(10), default="db")  # db | dir | s3 | dropped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        # Same bytes + same flags by the same tenant = one job. NULL for URL uploads until fetched.
        UniqueConstraint("tenant_id", "dedupe_key", name="uq_images_tenant_dedupe"),
        Index("ix_images_status_updated", "status", "updated_at"),
        Index("ix_images_tenant_sha", "tenant_id", "sha256"),
        Index("ix_images_callback_due", "callback_status", "callback_next_at"),
        # Batch counts and result pages (ordered by uid) read one tenant's batch through this index.
        Index("ix_images_tenant_batch", "tenant_id", "batch", "uid"),
        # Admission control counts a tenant's queued jobs; micro-batching claims the oldest queued of a queue.
        Index("ix_images_tenant_status_queue", "tenant_id", "status", "queue"),
        Index("ix_images_status_queue_updated", "status", "queue", "updated_at"),
    )

    uid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uid)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    original_filename: Mapped[str | None] = mapped_column(String(500), nullable=True)
    detection_flags: Mapped[str] = mapped_column(String(200), default="")
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # callback_url, set_person_id, ...
    batch: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the tenant's batch name
    status: Mapped[str] = mapped_column(String(12), default="queued")
    # The Celery queue its messages go to: "images" (interactive) or "images_bulk" (batches, manifests).
    queue: Mapped[str] = mapped_column(String(20), default="images", server_default="images")
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    format: Mapped[str | None] = mapped_column(String(10), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    timings: Mapped[dict] = mapped_column(JSON, default=dict)  # stage -> seconds
    quality_checks: Mapped[list | None] = mapped_column(JSON, nullable=True)  # error codes, when asked for
    nsfw: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {score, label}, with the `nsfw` flag
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    callback_status: Mapped[str | None] = mapped_column(String(12), nullable=True)  # pending|sent|failed
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the callback is next due (the outbox, workers/callbacks.py); NULL until the job finishes.
    callback_next_at: Mapped[datetime | None] = mapped_column(nullable=True)

    faces: Mapped[list[Face]] = relationship(
        back_populates="image", order_by="Face.index", cascade="all, delete-orphan"
    )


class Batch(Base):
    """Per-batch settings and the durable state of its one drain callback. Images name it by `batch`."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_batches_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    callback_status: Mapped[str | None] = mapped_column(String(12), nullable=True)  # pending|sent|failed
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0)
    callback_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    drained_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Last change of the callback state: a `pending` callback untouched for long lost its message.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Namespace(Base):
    __tablename__ = "namespaces"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_namespaces_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Person(Base):
    __tablename__ = "persons"
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_persons_namespace_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    namespace: Mapped[Namespace] = relationship(lazy="joined")


class Face(Base):
    __tablename__ = "faces"

    # The integer id keys the vector indexes (compact, int64); the uid is the public name.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uid)
    image_uid: Mapped[str] = mapped_column(ForeignKey("images.uid", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # order within the image, best score first
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    angle: Mapped[float] = mapped_column(Float, default=0.0)
    score: Mapped[float] = mapped_column(Float)
    points: Mapped[list] = mapped_column(JSON, default=list)  # [{x, y, type, name}]
    tags: Mapped[list] = mapped_column(JSON, default=list)  # [{name, value, confidence}]
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("persons.id", ondelete="SET NULL"), nullable=True, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    image: Mapped[Image] = relationship(back_populates="faces")
    person: Mapped[Person | None] = relationship(lazy="joined")
    # Loaded only when asked for: most answers carry no vectors (routes that do use selectinload).
    embeddings: Mapped[list[Embedding]] = relationship(cascade="all, delete-orphan", lazy="select")
    crop: Mapped[FaceCrop | None] = relationship(cascade="all, delete-orphan", lazy="select")


class Embedding(Base):
    """One vector per (face, model): vectors of different models are never compared."""

    __tablename__ = "embeddings"

    face_uid: Mapped[str] = mapped_column(ForeignKey("faces.uid", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(60), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian


class FaceCrop(Base):
    """The face and its surroundings cut at processing time, so face images and transforms never decode the
    original again. Crop pixel = (image pixel - (left, top)) * scale."""

    __tablename__ = "face_crops"

    face_uid: Mapped[str] = mapped_column(ForeignKey("faces.uid", ondelete="CASCADE"), primary_key=True)
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    left: Mapped[float] = mapped_column(Float)
    top: Mapped[float] = mapped_column(Float)
    scale: Mapped[float] = mapped_column(Float)
    landmarks5: Mapped[list] = mapped_column(JSON)  # the detector's 5 points in crop pixels, [[x, y], ...]


class RecognizeJob(Base):
    __tablename__ = "recognize_jobs"
    __table_args__ = (Index("ix_recognize_status_updated", "status", "updated_at"),)

    uid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uid)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    request: Mapped[dict] = mapped_column(JSON)  # faces_uuids, targets, parameters
    status: Mapped[str] = mapped_column(String(12), default="queued")
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WorkerHeartbeat(Base):
    """One row per running worker, refreshed every few seconds: /health says whether anyone consumes."""

    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # celery node name
    queues: Mapped[str] = mapped_column(String(200))
    last_seen: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class FaceTombstone(Base):
    """Faces deleted (erasure requests): the vector indexes drop these ids when they next catch up."""

    __tablename__ = "face_tombstones"
    __table_args__ = (Index("ix_face_tombstones_tenant_deleted", "tenant_id", "deleted_at"),)

    face_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer)
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaceppFaceSet(Base):
    """A Face++ FaceSet (api/vendors/facepp.py): its own namespace, one person per face; the metadata
    Face++ clients set (outer_id, display_name, user_data, tags) lives here."""

    __tablename__ = "facepp_facesets"
    __table_args__ = (UniqueConstraint("tenant_id", "outer_id", name="uq_facepp_facesets_outer_id"),)

    token: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uid)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id", ondelete="CASCADE"))
    outer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    user_data: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaceppUserId(Base):
    """The user_id a Face++ client attached to a face (face/setuserid)."""

    __tablename__ = "facepp_user_ids"

    face_uid: Mapped[str] = mapped_column(ForeignKey("faces.uid", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))


class AzureEntry(Base):
    """What Azure Face clients name that the native model has no column for: the name / userData /
    recognitionModel of person groups, persons, face lists and persisted faces, and a group's training
    time (api/vendors/azure.py). kind: group | person | facelist | face; key: Azure's id."""

    __tablename__ = "azure_entries"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
