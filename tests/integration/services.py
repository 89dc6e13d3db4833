"""Throwaway Redis and Postgres servers that a test may restart or stop, without touching the shared ones.

Each runs from a temporary folder on a free loopback port; used by the durability tests and by
benchmarks/faults.py. The binaries are the ones the machine already has (redis-server, PostgreSQL's
initdb/pg_ctl from /usr/lib/postgresql/*/bin).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, up: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not come {'up' if up else 'down'} in {timeout}s")


class PrivateRedis:
    """redis-server without persistence (like the shared one): a restart loses every queued message."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fq-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            + ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as abrupt as a crash: nothing is saved
            self.process.wait(timeout=10)
        _wait_port(self.port, up=False)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} is not installed (/usr/lib/postgresql/*/bin)")
    return found[-1]


def _as_postgres() -> dict:
    # PostgreSQL refuses to run as root (CI and this machine run tests as root): use its own account.
    return {"user": "postgres"} if os.geteuid() == 0 else {}


class PrivatePostgres:
    """A one-off cluster (trust auth, loopback) that can be restarted like a production database."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fq-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            **_as_postgres(),
        )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "pg.log"), "-o", options]
            + ["-w", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C"},
            cwd=self.dir,
            **_as_postgres(),
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        # immediate: connections are cut as in a crash or a failover, no polite goodbye
        self._ctl("stop", "-m", "immediate")

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Stack:
    """Private Postgres and Redis, a migrated database, an api key, `facequeue api` and worker processes:
    the production setup in miniature, every part of which a test may kill or restart."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.postgres = PrivatePostgres()
        self.redis = PrivateRedis()
        self.home = Path(tempfile.mkdtemp(prefix="fq-stack-"))
        self.env = {
            **os.environ,
            **(env or {}),
            "DATABASE_URL": self.postgres.url,
            "BROKER_URL": self.redis.url,
            "FACEQUEUE_HOME": str(self.home),
            "PYTHONPATH": str(ROOT),
        }
        self.workers: list[subprocess.Popen] = []
        self.api: subprocess.Popen | None = None
        self._cli("migrate")
        self.key = self._cli("keys", "create", "stack").strip().splitlines()[-1]
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def _cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "facequeue.cli", *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start_api(self, workers: int = 1) -> None:
        import httpx

        self.api = subprocess.Popen(
            [sys.executable, "-m", "facequeue.cli", "api", "--host", "127.0.0.1", "--port", str(self.port)]
            + ["--workers", str(workers)],
            env=self.env,
            cwd=ROOT,
            stdout=(self.home / "api.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health/live", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the api did not start")

    def start_worker(self, concurrency: int = 1, **env: str) -> subprocess.Popen:
        """The production worker command (`facequeue worker`), in its own process group."""
        name = f"w{len(self.workers)}-{os.getpid()}@%h"
        log = (self.home / f"worker-{len(self.workers)}.log").open("a")
        worker = subprocess.Popen(
            [sys.executable, "-m", "facequeue.cli", "worker", "--concurrency", str(concurrency), "-n", name],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(worker)
        return worker

    def worker_log(self, index: int) -> str:
        return (self.home / f"worker-{index}.log").read_text(errors="replace")

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL the process group: the main process and its pool children, no cleanup."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(worker)

    def sql(self, query: str, **params: object) -> list:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.postgres.url, poolclass=NullPool)
        with engine.begin() as connection:
            return list(connection.execute(text(query), params))

    def close(self) -> None:
        self.stop_workers()
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGTERM)
            self.api.wait(timeout=20)
        self.redis.close()
        self.postgres.close()
        shutil.rmtree(self.home, ignore_errors=True)
