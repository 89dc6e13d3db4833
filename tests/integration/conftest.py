"""Integration harness: a fresh Postgres database, a Redis db, and real Celery worker processes.

Settings are environment variables, set here before any project module is imported, exactly as a
production deployment sets them. The api runs in-process (TestClient over the real app); workers are
separate `celery worker` processes, so killing one is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_MODELS = ROOT.parent / "shared" / "models"
PG_ADMIN_URL = os.environ.get("FACEQUEUE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FACEQUEUE_TEST_REDIS", "redis://127.0.0.1:6379/11")
DB_NAME = f"facequeue_it_{uuid.uuid4().hex[:8]}"
HOME = Path(os.environ.get("TMPDIR", "/tmp")) / DB_NAME

os.environ.update(
    DATABASE_URL=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}",
    BROKER_URL=REDIS_URL,
    FACEQUEUE_HOME=str(HOME),
    # The upstream-only optional models (liveness) come from ../shared/models where it exists (CI).
    FACEQUEUE_MODEL_MIRROR=str(SHARED_MODELS) if SHARED_MODELS.is_dir() else "",
    FACEQUEUE_JOB_LEASE_S="6",
    FACEQUEUE_REAPER_INTERVAL_S="1",
    FACEQUEUE_REQUEUE_QUEUED_AFTER_S="5",
    FACEQUEUE_EMBEDDING_PROFILE=os.environ.get("FACEQUEUE_EMBEDDING_PROFILE", "fast"),
    # Test HTTP servers listen on 127.0.0.2; 127.0.0.1 stays forbidden so the refusal is tested too.
    FACEQUEUE_URL_ALLOWED_NETWORKS="127.0.0.2/32",
    FACEQUEUE_URL_TIMEOUT_S="2",
    FACEQUEUE_MAX_UPLOAD_BYTES=str(8 * 1024 * 1024),
    FACEQUEUE_MAX_IMAGE_PIXELS=str(30_000_000),
    # Several workers share this host: none serves metrics unless a test gives it a port.
    FACEQUEUE_WORKER_METRICS_PORT="0",
)
os.environ.setdefault("FACEQUEUE_MODEL_DIR", str(Path.home() / ".cache" / "facequeue" / "models"))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from api.app import create_app  # noqa: E402
from facequeue.cli import worker_command  # noqa: E402
from schema import answers  # noqa: E402


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    from schema.migrate import upgrade

    upgrade()
    yield os.environ["DATABASE_URL"]
    from schema.db import get_engine

    get_engine().dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))


class Worker:
    """A `celery worker` process in its own process group."""

    def __init__(self, env: dict[str, str] | None = None, interactive_only: bool = False) -> None:
        self.log = HOME / f"worker-{uuid.uuid4().hex[:6]}.log"
        HOME.mkdir(parents=True, exist_ok=True)
        # The production worker command (facequeue worker), one prefork child, a unique node name.
        command = worker_command(
            ["--pool", "prefork", "--concurrency", "1", "-n", f"it-{uuid.uuid4().hex[:6]}@%h"],
            interactive_only,
        )
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole group: parent and pool children die with no chance to clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Workers:
    """The worker processes of this test session."""

    def __init__(self) -> None:
        self.running: list[Worker] = []

    def start(self, interactive_only: bool = False, **env: str) -> Worker:
        worker = Worker(env, interactive_only)
        self.running.append(worker)
        return worker

    def ensure(self) -> Worker:
        """The worker running, or a new one when every worker was stopped or killed (durability tests)."""
        alive = [w for w in self.running if w.process.poll() is None]
        return alive[0] if alive else self.start()

    def stop_all(self) -> None:
        for worker in self.running:
            worker.stop()
        self.running.clear()


@pytest.fixture(scope="session")
def workers(database: str) -> Iterator[Workers]:
    pool = Workers()
    yield pool
    pool.stop_all()


@pytest.fixture
def worker(workers: Workers) -> Worker:
    """One ordinary worker for the tests that just need jobs processed (checked for every test: a test
    before may have stopped or killed every worker)."""
    return workers.ensure()


@pytest.fixture(scope="session")
def client(database: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def make_key(name: str, admin: bool = False) -> str:
    argv = [sys.executable, "-m", "facequeue.cli", "keys", "create", name] + (["--admin"] if admin else [])
    out = subprocess.run(argv, cwd=ROOT, env=os.environ, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def api_key(database: str) -> str:
    return make_key("tenant-a")


@pytest.fixture(scope="session")
def other_key(database: str) -> str:
    return make_key("tenant-b")


def wait_for(
    client: TestClient, uid: str, key: str, timeout: float = 120, until: tuple = ("done", "error")
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v2/media/{uid}", headers={"X-API-Key": key}).json()
        if body["status"] in until:
            answers.Media.model_validate(body)  # the documented shape (OpenAPI) is what is sent
            return body
        time.sleep(0.2)
    raise AssertionError(f"media {uid} still {body['status']} after {timeout}s")


@pytest.fixture(scope="session")
def live_server(database: str) -> Iterator[str]:
    """The real app over real HTTP (uvicorn in a thread), for clients that are not Python: curl, a browser."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
