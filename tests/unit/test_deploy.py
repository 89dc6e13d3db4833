"""The operators' compose file: valid, no secrets in it, every long-running service restarts and reports
its health, one image for every role, and the models fetched once by a one-shot service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ONE_SHOT = {"migrate", "models"}


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    pytest.skip("neither docker compose nor docker-compose is installed (make test installs docker-compose)")


def config(env_file: Path) -> dict:
    run = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)


def test_compose_config_validates_with_the_example_env() -> None:
    services = config(ROOT / "deploy" / "env.example")["services"]
    assert {"postgres", "redis", "migrate", "models", "api", "worker", "worker-interactive", "flower"} <= set(
        services
    )
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] == "unless-stopped", name
        assert "healthcheck" in service, name
    # One image, built once, for every facequeue role.
    assert {services[n]["image"] for n in ("migrate", "models", "api", "worker", "flower")} == {
        "facequeue:local"
    }
    for name in ("api", "worker", "flower"):
        assert services[name]["depends_on"]["models"]["condition"] == "service_completed_successfully"
    # Flower: loopback only, behind basic auth.
    assert all(
        str(p.get("host_ip", p) if isinstance(p, dict) else p).startswith("127.0.0.1")
        for p in services["flower"]["ports"]
    )
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"]


def test_compose_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    run = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "--env-file", str(empty), "config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "POSTGRES_PASSWORD" in run.stderr


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    # Every secret-bearing key takes its value from the environment (.env), never a literal.
    assert not re.search(r"^\s*\w*(PASSWORD|BASIC_AUTH)\w*:\s+(?!\$\{)", text, re.M), "secrets come from .env"
    assert "facequeue:facequeue@" not in text


def test_images_install_dependencies_before_the_code() -> None:
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        lines = (ROOT / "deploy" / dockerfile).read_text().splitlines()
        install_deps = next(i for i, line in enumerate(lines) if "requirements.txt" in line)
        copy_code = next(i for i, line in enumerate(lines) if line.startswith("COPY workers"))
        assert install_deps < copy_code, dockerfile
    assert "onnxruntime-gpu==" in (ROOT / "deploy" / "Dockerfile.gpu").read_text(), "pinned"
    assert ".git" in (ROOT / ".dockerignore").read_text().split()
