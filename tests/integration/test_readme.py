"""The README tells the truth: its API examples run as written against a live server, and its route table
lists every route the app serves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ROOT
from tests.photos import astronaut, encode

README = (ROOT / "README.md").read_text()


def readme_examples() -> list[str]:
    return re.findall(r"<!-- readme-example -->\n```sh\n(.*?)```", README, re.S)


def test_readme_examples_run_against_a_live_server(tmp_path: Path, live_server: str, worker) -> None:  # type: ignore[no-untyped-def]
    examples = readme_examples()
    assert len(examples) >= 3
    # A newcomer's folder: their photo, and the .venv/bin/facequeue the README names.
    (tmp_path / "photo.jpg").write_bytes(encode(astronaut()))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    facequeue = tmp_path / ".venv" / "bin" / "facequeue"
    facequeue.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m facequeue.cli "$@"\n')
    facequeue.chmod(0o755)
    script = "\n".join(examples).replace("localhost:8000", live_server)
    # Any HTTP error fails the run: the examples must work as written, not merely print something.
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body --max-time 30 "$@"; }\n'
    run = subprocess.run(
        ["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    out = run.stdout
    # What the comments under the commands promise.
    assert re.search(r'"name": "age",\s*"value": "\d+"', out), out
    assert "\n128\n" in out
    assert '["done","NOT_AN_IMAGE"]' in out
    assert '{"person_id":"Eileen Collins@crew","is_match":true}' in out
    assert '{"int_response":0,"string_response":"ok","img_uid":' in out
    print(f"{len(examples)} README example blocks, {script.count('curl ')} curl calls: all ran")


def test_readme_route_table_lists_every_route(client) -> None:  # type: ignore[no-untyped-def]
    table = README[README.index("| v1 function (POST `/v1/…`)") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(?:(?:GET|POST|DELETE|PUT) )?(/[^`\s]*)`", table))
    documented |= {f"/v1/{name}" for name in re.findall(r"^\| `(\w+)`", table, re.M)}
    routes = set(client.get("/openapi.json").json()["paths"]) | {"/docs", "/redoc", "/openapi.json"}
    missing = sorted(r for r in routes if r not in documented)
    assert not missing, f"routes the README does not list: {missing}"
