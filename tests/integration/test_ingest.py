"""`facequeue ingest` against the real api (uvicorn), Postgres, Redis and a Celery worker: kill the CLI
mid-run and resume, person folders, batch counts, cancellation, URL manifests, drain callback, export."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from facequeue.client import Client
from tests.integration.conftest import HOME, ROOT, make_key
from tests.integration.helpers import LocalServer
from tests.photos import astronaut, encode, group, hopper


def variants(rgb: np.ndarray, count: int) -> list[bytes]:
    """Distinct files of one photo: resized, cropped, re-encoded at different JPEG qualities."""
    out = []
    image = Image.fromarray(rgb)
    for i in range(count):
        scale = 0.55 - 0.05 * (i % 4)
        w, h = image.size
        crop = image.crop((i * 3, i * 2, w - i * 2, h - i * 3))
        small = crop.resize((int(crop.width * scale), int(crop.height * scale)))
        out.append(encode(np.asarray(small), quality=90 - 4 * i))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_url(database: str) -> Iterator[str]:
    """The production api command in its own process, so the CLI talks real HTTP to it."""
    port = free_port()
    log = (HOME / f"api-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "facequeue.cli", "api", "--host", "127.0.0.2", "--port", str(port)],
        cwd=ROOT,
        env=os.environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.2:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    else:
        process.terminate()
        raise AssertionError("api did not start")
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def ingest_key(database: str) -> str:
    return make_key("ingest-tenant")


def cli(api_url: str, key: str, *args: str, sigint_ignored: bool = False) -> subprocess.Popen:
    """`facequeue ARGS`; sigint_ignored: started the way a shell's `cmd &` (no job control) starts it,
    SIGINT ignored, which the exec'd CLI inherits."""
    env = {**os.environ, "FACEQUEUE_URL": api_url, "FACEQUEUE_API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-m", "facequeue.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )


def tenant_images(key_name: str) -> list:
    from schema.db import session_scope
    from schema.tables import Image as ImageRow
    from schema.tables import Tenant

    with session_scope() as session:
        tenant = session.execute(select(Tenant.id).where(Tenant.name == key_name)).scalar_one()
        return list(session.execute(select(ImageRow).where(ImageRow.tenant_id == tenant)).scalars())


def test_kill_mid_run_then_resume_does_every_image_exactly_once(
    api_url: str, ingest_key: str, worker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    (folder / "deep").mkdir(parents=True)
    # Enough photos that both interruptions land mid-run, even on a fast machine.
    photos = variants(astronaut(), 12) + variants(hopper(), 12) + variants(group(), 6)
    for i, data in enumerate(photos):
        (folder / ("deep" if i % 2 else "") / f"img{i}").write_bytes(data)  # no extensions: by content
    (folder / "readme.txt").write_text("not a photo")
    out = tmp_path / "results.jsonl"
    args = ["ingest", str(folder), "--out", str(out), "--batch", "kill-test", "--concurrency", "2"]

    first = cli(api_url, ingest_key, *args)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished_before = len(out.read_text().splitlines())
    assert 3 <= finished_before < len(photos), "the kill must land mid-run"

    # Ctrl-C mid-run: exit 130 with the summary, what finished is kept. Twice: SIGINT as a terminal
    # sends it, and to a CLI whose parent ignores SIGINT (how the full integration session once ran,
    # which made the CLI ignore it, finish the run and exit 0). One upload at a time, and the signal
    # comes as soon as this run has finished one more photo, so it lands mid-run.
    for sigint_ignored in (False, True):
        finished = len(out.read_text().splitlines())
        interrupted = cli(
            api_url, ingest_key, *args[:-2], "--concurrency", "1", sigint_ignored=sigint_ignored
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(out.read_text().splitlines()) <= finished:
            assert interrupted.poll() is None, interrupted.communicate()
            time.sleep(0.05)
        interrupted.send_signal(signal.SIGINT)
        stdout, stderr = interrupted.communicate(timeout=15)
        assert interrupted.returncode == 130, stderr
        assert "run the same command again to resume" in stderr and "outcome" in stderr, stderr
        assert finished < len(out.read_text().splitlines()) < len(photos), "stopped mid-run"

    second = cli(api_url, ingest_key, *args)
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr
    assert "skipped (done before)" in stderr and "done" in stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(photos)  # one line per source, the kill's partial lines folded in
    assert {line["status"] for line in lines} == {"done"}
    assert all(line["faces"] for line in lines), "every photo has a face"

    images = tenant_images("ingest-tenant")
    assert len(images) == len(photos), "no duplicate job for the images in flight at the kill"
    assert sorted(i.sha256 for i in images) == sorted(line["sha256"] for line in lines)
    assert {i.status for i in images} == {"done"} and {i.batch for i in images} == {"kill-test"}

    with Client(api_url, ingest_key) as client:
        summary = client.batch("kill-test")
        assert summary["counts"] == {
            "queued": 0,
            "processing": 0,
            "done": len(photos),
            "error": 0,
            "cancelled": 0,
        }
        assert summary["faces"] == sum(len(line["faces"]) for line in lines)
        assert summary["drained"] and summary["images_per_s"] > 0
        results = list(client.batch_results("kill-test", page=4))  # paged: 3 pages
        assert sorted(r["media_uuid"] for r in results) == sorted(line["media_uuid"] for line in lines)
    other = httpx.get(f"{api_url}/v2/batches/kill-test", headers={"X-API-Key": make_key("ingest-other")})
    assert other.status_code == 404  # a batch is per tenant

    export = cli(
        api_url, ingest_key, "export", "--batch", "kill-test", "--out", str(tmp_path / "export.jsonl")
    )
    assert export.wait(timeout=60) == 0
    assert len((tmp_path / "export.jsonl").read_text().splitlines()) == len(photos)


def test_person_from_folder_enrols_once(api_url: str, ingest_key: str, worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "people"
    for name, rgb in (("Eileen_Collins", astronaut()), ("Grace Hopper", hopper())):
        (root / name).mkdir(parents=True)
        for i, data in enumerate(variants(rgb, 3)):
            (root / name / f"{i}.jpg").write_bytes(data)
    args = [
        "ingest",
        str(root),
        "--person-from-folder",
        "--namespace",
        "crew",
        "--batch",
        "crew-photos",
        "--out",
        str(tmp_path / "p.jsonl"),
    ]
    out = tmp_path / "p.jsonl"
    # Ctrl-C once the first photo is enrolled (one upload at a time, so it lands mid-run) ...
    interrupted = cli(api_url, ingest_key, *args, "--concurrency", "1")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not out.exists() or not out.read_text().splitlines()):
        assert interrupted.poll() is None, interrupted.communicate()
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=15)
    assert interrupted.returncode == 130, stderr
    assert 1 <= len(out.read_text().splitlines()) < 6, "stopped mid-run"
    # ... then two whole runs: the first finishes the rest, the second neither re-uploads nor enrols again.
    for grouping in (["--per-request", "2"], []):  # groups of 2 + 1 per person folder, then the default
        run = cli(api_url, ingest_key, *args, *grouping)
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr
    with Client(api_url, ingest_key) as client:
        persons = {p["person_id"]: p["faces_uuids"] for p in client.persons("all@crew")}
        assert sorted(persons) == ["Eileen Collins@crew", "Grace Hopper@crew"]
        assert [len(faces) for faces in persons.values()] == [3, 3]  # the best face of each photo, once
        exported = list(client.namespace_faces("crew"))
        with_vectors = list(client.namespace_faces("crew", embeddings=True, page=4))  # two pages
        batch_vectors = {
            face["face_uuid"]: face["embedding"]
            for media in client.batch_results("crew-photos", embeddings=True)
            for face in media["faces"]
        }
    assert sorted({face["person_id"] for face in exported}) == sorted(persons)
    assert len(exported) == 6 and "embedding" not in exported[0]
    # Vectors only when asked for, the same through both exports.
    assert [face["face_uuid"] for face in with_vectors] == [face["face_uuid"] for face in exported]
    assert all(len(face["embedding"]) >= 128 and face["embedding_model"] for face in with_vectors)
    assert all(batch_vectors[face["face_uuid"]] == face["embedding"] for face in with_vectors)
    crew = [i for i in tenant_images("ingest-tenant") if i.options.get("set_person_id")]
    assert len(crew) == 6 and all("bestface" in i.detection_flags for i in crew)


def test_cancel_queued_and_drain_callback_fires_once(client, api_key: str, worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receiver = LocalServer(encode(astronaut()))
    headers = {"X-API-Key": api_key}
    try:
        put = client.put(
            "/v2/batches/cancel-test", json={"callback_url": receiver.url("/callback")}, headers=headers
        )
        assert put.status_code == 200 and put.json()["total"] == 0
        photos = variants(hopper(), 4) + variants(astronaut(), 4)
        uids = []
        for data in photos:
            body = {"file_base64": base64.b64encode(data).decode(), "batch": "cancel-test"}
            uids.append(client.post("/v2/media", json=body, headers=headers).json()["media_uuid"])
        cancelled = client.delete("/v2/batches/cancel-test", headers=headers).json()
        assert cancelled["cancelled"] >= 1, "one worker cannot have started all eight"
        assert cancelled["counts"]["cancelled"] == cancelled["cancelled"]
        deadline = time.monotonic() + 90
        while not (summary := client.get("/v2/batches/cancel-test", headers=headers).json())["drained"]:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        counts = summary["counts"]
        assert counts["done"] + counts["cancelled"] == len(photos) and counts["error"] == 0
        page = client.get("/v2/batches/cancel-test/results?status=error", headers=headers).json()["results"]
        assert len(page) == counts["cancelled"] and {r["error"]["code"] for r in page} == {"CANCELLED"}
        # The drain callback: exactly one POST, carrying the final counts.
        deadline = time.monotonic() + 30
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)
        assert len(receiver.received) == 1
        assert receiver.received[0]["batch"] == "cancel-test" and receiver.received[0]["counts"] == counts
        assert client.get("/v2/batches/cancel-test", headers=headers).json()["callback_status"] == "sent"
        # A cancelled photo may be uploaded again: a new job, not the cancelled one.
        data = next(d for d in photos if hashlib.sha256(d).hexdigest() == page[0]["checksum"])
        again = client.post(
            "/v2/media", json={"file_base64": base64.b64encode(data).decode()}, headers=headers
        )
        assert again.json()["media_uuid"] != page[0]["media_uuid"]
    finally:
        receiver.close()


def test_url_manifest_in_one_request(client, api_key: str, worker) -> None:  # type: ignore[no-untyped-def]
    server = LocalServer(encode(hopper()))
    headers = {"X-API-Key": api_key}
    try:
        urls = [
            server.url("/image.jpg"),
            server.url("/missing"),
            "ftp://example.org/x.jpg",
            "http://127.0.0.1/x.jpg",
        ]
        first = client.post(
            "/v2/batches/url-test/urls", json={"urls": urls, "detection_flags": "bestface"}, headers=headers
        )
        assert first.status_code == 202, first.text
        body = first.json()
        assert [a["url"] for a in body["accepted"]] == urls[:2]
        assert {r["code"] for r in body["rejected"]} == {"URL_INVALID", "URL_FORBIDDEN"}
        # Posting the manifest again (a resumed client) names the same jobs: no URL is fetched twice.
        again = client.post(
            "/v2/batches/url-test/urls",
            json={"urls": urls[:2], "detection_flags": "bestface"},
            headers=headers,
        )
        assert [a["media_uuid"] for a in again.json()["accepted"]] == [
            a["media_uuid"] for a in body["accepted"]
        ]
        deadline = time.monotonic() + 90
        while not (summary := client.get("/v2/batches/url-test", headers=headers).json())["drained"]:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert summary["counts"]["done"] == 1 and summary["counts"]["error"] == 1 and summary["faces"] == 1
        too_many = client.post(
            "/v2/batches/url-test/urls", json={"urls": ["http://e.org/x"] * 10_001}, headers=headers
        )
        assert too_many.status_code == 422
    finally:
        server.close()


def test_batch_names_are_checked(client, api_key: str) -> None:  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": api_key}
    bad = client.post(
        "/v2/media", json={"file_uri": "http://127.0.0.2:9/x.jpg", "batch": "no/slash?"}, headers=headers
    )
    assert bad.status_code == 422
    assert client.get("/v2/batches/never-made", headers=headers).status_code == 404


def test_one_batch_row_and_one_job_per_url_within_a_batch(client, api_key: str) -> None:  # type: ignore[no-untyped-def]
    from schema.db import session_scope
    from schema.tables import Batch

    headers = {"X-API-Key": api_key}
    for _ in range(3):
        client.post(
            "/v2/media", json={"file_uri": "http://127.0.0.2:9/dup.jpg", "batch": "dup"}, headers=headers
        )
    with session_scope() as session:
        assert (
            session.execute(select(func.count()).select_from(Batch).where(Batch.name == "dup")).scalar_one()
            == 1
        )
    assert client.get("/v2/batches/dup", headers=headers).json()["total"] == 1


def test_reaper_resends_a_lost_drain_callback(database: str, api_key: str) -> None:
    """The drain was committed as `pending` but its message never ran (worker killed between the two)."""
    from datetime import timedelta

    from facequeue.settings import get_settings
    from schema.db import session_scope
    from schema.tables import Batch, Tenant, utcnow
    from workers.reaper import lost_batch_callbacks

    with session_scope() as session:
        tenant = session.execute(select(Tenant.id).where(Tenant.name == "tenant-a")).scalar_one()
        batch = Batch(tenant_id=tenant, name="lost-callback", callback_url="http://127.0.0.2:9/cb")
        batch.callback_status, batch.updated_at = "pending", utcnow() - timedelta(hours=1)
        session.add(batch)
        session.flush()
        lost = batch.id
    assert lost in lost_batch_callbacks(get_settings())
    assert lost not in lost_batch_callbacks(get_settings())  # re-sent once, then given time to run


def test_client_ingest_of_urls_and_bytes(api_url: str, ingest_key: str, worker) -> None:  # type: ignore[no-untyped-def]
    server = LocalServer(encode(hopper()))
    try:
        with Client(api_url, ingest_key) as client:
            sources = [server.url("/image.jpg"), server.url("/missing"), variants(astronaut(), 1)[0]]
            results = {r.source: r for r in client.ingest(sources, flags="bestface", batch="url-ingest")}
        assert results[server.url("/image.jpg")].status == "done"
        assert len(results[server.url("/image.jpg")].faces) == 1
        assert results[server.url("/missing")].error["code"] == "URL_HTTP_ERROR"
        assert results["<bytes>"].status == "done" and results["<bytes>"].sha256
    finally:
        server.close()


def test_async_client_ingests_files_in_groups(api_url: str, ingest_key: str, worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from facequeue.client import AsyncClient

    paths = []
    for index, data in enumerate([*variants(hopper(), 2), b"\xff\xd8 only the start of a JPEG"]):
        paths.append(tmp_path / f"{index}.jpg")
        paths[-1].write_bytes(data)

    async def main() -> list:
        async with AsyncClient(api_url, ingest_key) as client:
            return [r async for r in client.ingest(paths, flags="bestface", per_request=2, batch="async")]

    results = {r.source: r for r in asyncio.run(main())}
    assert [results[str(p)].status for p in paths] == ["done", "done", "error"]
    assert all(len(results[str(p)].faces) == 1 for p in paths[:2])
    assert results[str(paths[2])].error["code"] == "NOT_AN_IMAGE"
