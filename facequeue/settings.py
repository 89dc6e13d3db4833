"""All settings, from the environment (12-factor). One place, imported by api and workers alike."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("facequeue"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEQUEUE_", extra="ignore", populate_by_name=True)

    # Where the embedded default keeps its SQLite file, broker, blobs and model cache.
    home: Path = Field(default_factory=_default_home)
    # Production: postgresql+psycopg://... (psycopg 3; psycopg2 works too) and redis://... ; empty = embedded default under `home`.
    database_url: str = Field("", validation_alias="DATABASE_URL")
    broker_url: str = Field("", validation_alias="BROKER_URL")

    # Model pack.
    model_dir: Path | None = None  # cache of fetched + converted models; default home/models
    model_mirror: Path | None = None  # local folder searched first (air-gapped installs, tests)
    # fast = SFace; accurate = SFace + dlib, fused; facenet / facenet-dlib = the profiles before SFace
    # (workers/recognition/profiles.py). Changing it: run `facequeue reembed` for enrolled faces.
    embedding_profile: Literal["fast", "accurate", "facenet", "facenet-dlib"] = "fast"
    int8_embeddings: bool = False
    providers: str = "CUDAExecutionProvider,CPUExecutionProvider"  # tried in order, missing ones skipped
    # Threads per inference session. 1 measured fastest per core (faces are small batches); scale with
    # worker processes (`facequeue worker --concurrency N`) instead. 0 = onnxruntime decides.
    intra_op_threads: int = 1
    min_face_size: int = 20  # pixels, shorter side of the box
    detection_threshold: float = 0.6
    detection_max_side: int = 640  # images are downscaled to this long side for detection (AP vs speed)
    # fast = one pass at detection_max_side; auto = a second pass at detection_accurate_max_side when a small
    # face candidate shows up; accurate = both passes always (workers/pipeline/detect.py). Per upload:
    # the `detection_mode` option.
    detection_mode: Literal["fast", "auto", "accurate"] = "auto"
    detection_accurate_max_side: int = 1280
    # Second look at uncertain detections (score < nonface_sure_score): dropped when the face-mesh network's
    # face-presence score is below nonface_min_face_score (animals, patterns).
    nonface_check: bool = True
    nonface_min_face_score: float = 0.05
    nonface_sure_score: float = 0.75
    # Confident detections (>= nonface_sure_score) are dropped only below this far lower floor; 0 = never.
    nonface_sure_min_face_score: float = 0.0
    # Every detection whose box has a short side >= nonface_onet_min_side pixels (confident ones too) is
    # dropped when MTCNN's O-Net, a face/non-face classifier, rates it below nonface_onet_min_prob (mean of
    # 4 crops); 0 = off. Catches a frontal dog face YuNet and the mesh both take for a human one
    # (tools/onet_check.py: WIDER faces >= 80 px score >= 0.38 but one, the puppy at most 0.16).
    nonface_onet_min_prob: float = 0.25
    nonface_onet_min_side: float = 80.0
    # `nsfw` flag: open_nsfw scores at or above this are labelled nsfw (Yahoo: < 0.2 safe, > 0.8 likely NSFW).
    nsfw_threshold: float = 0.5

    # Input limits.
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    url_timeout_s: float = 10.0
    # Comma-separated CIDRs that image_url / callback_url may reach although private (closed networks, tests).
    url_allowed_networks: str = ""
    # Fault injection for durability tests: seconds a worker sleeps inside process_image. Never set in production.
    debug_task_delay_s: float = 0.0

    # Storage of original bytes: "db" (default) or "dir" (blob_dir, a volume shared by api and workers).
    blob_store: Literal["db", "dir"] = "db"
    blob_dir: Path | None = None
    keep_originals: bool = True  # False: drop the original bytes once processed

    # Job durability. A running job renews its lease every job_lease_s / 3 (heartbeat), so a long job is
    # never taken for dead; a lease that lapses means the worker died and the reaper re-sends the job.
    job_lease_s: int = 30
    requeue_queued_after_s: int = 30  # a `queued` job untouched this long whose message is missing is re-sent
    reaper_interval_s: int = 10
    max_attempts: int = 5
    callback_max_attempts: int = 6  # then the callback is `failed` (backoff 10 s, 20 s, ... between tries)
    # How long a request waits for a restarting database to answer before it gives up with 503.
    outage_wait_s: float = 3.0

    # Synchronous answers (`?wait=`, the vendor adapters): the longest a request waits for its job before
    # answering "accepted" (v2) or the vendor's timeout error; the job stays queued and pollable.
    sync_wait_s: float = 30.0
    # Without Redis (embedded SQLite): how often the api's one shared watcher looks for commits.
    wait_check_interval_s: float = 0.05

    # Admission control, per tenant (0 = no limit). Over a limit the api answers 429 with Retry-After.
    tenant_max_queued: int = 10_000  # queued image jobs (interactive + bulk) a tenant may have waiting
    tenant_max_requests_per_s: int = 500  # authenticated requests per second (Redis window when on Redis)
    queue_full_retry_after_s: int = 5  # Retry-After answered when the queue limit is reached
    api_key_cache_s: float = 5.0  # the api caches key -> tenant this long (a revoked key lives on this long)

    # Micro-batching: a worker takes up to batch_max_jobs queued image jobs of one queue at once, waiting at
    # most batch_wait_ms for more to arrive, and runs them through the pipeline as one batch. 1 = off, the
    # default: on CPU it measured no faster and made interactive jobs wait behind whole batches
    # (benchmarks/RESULTS.md); raise it for a GPU worker, whose throughput grows with the batch.
    batch_max_jobs: int = 1
    batch_wait_ms: int = 20

    # Workers that take bulk work run at this lower CPU priority (nice; 0 = unchanged), so on a shared host
    # the api, the databases and interactive-only workers are served first while a backlog drains.
    worker_nice: int = Field(10, ge=0, le=19)

    # Celery task events (received, started, succeeded: Flower's task pages) cost a worker 1-2 ms of CPU per
    # job (a third of the Celery parent process's CPU under load, by py-spy). Flower switches them on while
    # it runs (its enable_events), so they are sent only while someone watches; true sends them always.
    task_events: bool = False

    # Metrics: each worker serves Prometheus /metrics on this port (0 = off); api and worker processes
    # share their counters through files in metrics_dir (default: a fresh temporary folder per launch).
    worker_metrics_port: int = 9808
    metrics_dir: Path | None = None

    # quality_checks thresholds, overriding workers.pipeline.quality_checks.QualityThresholds defaults,
    # e.g. FACEQUEUE_QUALITY_THRESHOLDS='{"min_face_px": 100, "max_yaw": 20}'.
    quality_thresholds: dict[str, float] = Field(default_factory=dict)

    # Recognition.
    default_fmr: float = 1e-3
    # 1:N (`all@namespace`): false alarms per probe grow with the gallery; matches there are decided at
    # FMR = default_fpir / (faces in the namespace), so about this share of strangers get a match.
    default_fpir: float = 1e-2
    ann_min_size: int = 20_000  # namespaces larger than this are searched with the ANN index

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'facequeue.sqlite'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home / 'broker.sqlite'}"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.home / "models"

    @property
    def embedded(self) -> bool:
        return not self.database_url


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings
