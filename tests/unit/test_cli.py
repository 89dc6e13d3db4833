"""The `facequeue` command: argument passing, and a worker that cannot get its models says so and stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facequeue import cli
from facequeue.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_worker_passes_celery_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _exe, argv: seen.append(argv))
    cli.main(["worker", "--concurrency", "4", "--pool", "prefork"])
    assert seen[0][-4:] == ["--concurrency", "4", "--pool", "prefork"]
    assert seen[0][seen[0].index("-A") + 1] == "workers.celery_app"


def test_interactive_lane_leaves_the_bulk_queue_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.celery_app import BULK_QUEUE, IMAGES_QUEUE

    seen: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _exe, argv: seen.append(argv))
    cli.main(["worker"])
    cli.main(["worker", "--interactive-only", "--concurrency", "1"])
    cli.main(["worker", "--interactive-only", "-n", "lane@host"])
    full, lane, named = (argv[argv.index("-Q") + 1].split(",") for argv in seen)
    assert full[0] == IMAGES_QUEUE and full[-1] == BULK_QUEUE
    assert lane == full[:-1] == named
    # A node name of its own beside a full worker on the same host, unless the caller named it.
    assert seen[1][seen[1].index("--hostname") + 1] == "interactive@%h"
    assert "--hostname" not in seen[2] and seen[2][-2:] == ["-n", "lane@host"]


def test_workers_taking_bulk_work_yield_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    niced: list[int] = []
    monkeypatch.setattr(os, "execv", lambda _exe, _argv: None)
    monkeypatch.setattr(os, "nice", niced.append)
    monkeypatch.setenv("FACEQUEUE_WORKER_NICE", "7")
    cli.get_settings.cache_clear()
    try:
        cli.main(["worker", "--interactive-only"])
        assert niced == []  # the interactive lane keeps the api's priority
        cli.main(["worker"])
        assert niced == [7]
    finally:
        cli.get_settings.cache_clear()


def test_other_commands_refuse_unknown_options() -> None:
    with pytest.raises(SystemExit):
        cli.main(["migrate", "--nope"])


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Offline and uncached: no mirror, an unreachable package index, an empty model cache."""
    (tmp_path / "empty-mirror").mkdir(exist_ok=True)
    return {
        **os.environ,
        "FACEQUEUE_HOME": str(tmp_path),
        "FACEQUEUE_MODEL_DIR": str(tmp_path / "models"),
        "FACEQUEUE_MODEL_MIRROR": str(tmp_path / "empty-mirror"),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_DEFAULT_TIMEOUT": "2",
        "PIP_RETRIES": "0",
    }


def test_worker_without_models_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "facequeue.cli", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "the model pack is not available" in run.stderr
    assert "face_detection_yunet_2023mar.onnx" in run.stderr


@pytest.mark.parametrize("command", [["models", "fetch", "yunet"], ["serve", "--port", "9"]])
def test_missing_models_end_in_a_message_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "facequeue.cli", *command],
        cwd=ROOT,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    assert f"facequeue {command[0]}: model 'yunet'" in run.stderr
    assert "FACEQUEUE_MODEL_MIRROR" in run.stderr and "--from FOLDER" in run.stderr


def test_readme_documents_every_setting() -> None:
    """The README's configuration table names every setting by its environment variable."""
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    test_hooks = {"debug_task_delay_s"}  # fault injection for the durability tests, never set in production
    variables = {
        name: field.validation_alias
        if isinstance(field.validation_alias, str)
        else f"FACEQUEUE_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if name not in test_hooks
    }
    assert [f"`{v}`" for v in variables.values() if f"`{v}`" not in table] == []
