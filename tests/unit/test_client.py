"""The client against a fake server (httpx.MockTransport): retries, Retry-After, typed results, ingest
sources and the resume state. The real server is exercised in tests/integration/test_ingest.py."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import io
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from facequeue import ingest
from facequeue.client import AsyncClient, Client, FacequeueAPIError, Retry, retry_after
from facequeue.ingest import (
    EXIT_INTERRUPTED,
    EXIT_ITEM_ERRORS,
    EXIT_OK,
    EXIT_SERVER,
    iter_sources,
    run_ingest,
)
from tests.photos import astronaut, encode, hopper

FAST = Retry(attempts=4, base_s=0.01, max_s=0.05)


def multipart_fields(request: httpx.Request) -> dict:
    """A multipart body's fields (a repeated field as a list), read with the standard library."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    values: dict[str, list] = {}
    for part in email.message_from_bytes(head + request.content, policy=email.policy.HTTP).iter_parts():
        name = part.get_param("name", header="content-disposition")
        value = part.get_payload(decode=True)
        values.setdefault(name, []).append(value if name == "file" else value.decode())
    return {name: found[0] if len(found) == 1 else found for name, found in values.items()}


class FakeServer:
    """/v2/media (JSON, base64), /v2/media/file and /v2/media/files (multipart): accepts uploads, dedupes
    by sha256+options like the real one; a job is done on its second poll. `refuse` answers the first N
    upload requests with 429 + Retry-After."""

    def __init__(self, refuse: int = 0, retry_after_s: str = "0.3", sync: bool = False) -> None:
        self.refuse, self.retry_after_s, self.sync = refuse, retry_after_s, sync
        self.jobs: dict[str, dict] = {}
        self.keys: dict[str, str] = {}
        self.polls: dict[str, int] = {}
        self.upload_times: list[float] = []  # of upload requests, refused ones too
        self.received: list[str] = []  # sha256 of each image of the accepted upload requests
        self.group_sizes: list[int] = []  # files per /v2/media/files request
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.headers.get("x-api-key") != "k":
            return httpx.Response(401, json={"error": {"code": "UNAUTHORIZED", "message": "no"}})
        path = request.url.path
        if request.method == "POST" and path in ("/v2/media", "/v2/media/file", "/v2/media/files"):
            self.upload_times.append(time.monotonic())
            if self.refuse > 0:
                self.refuse -= 1
                return httpx.Response(
                    429,
                    headers={"Retry-After": self.retry_after_s},
                    json={"error": {"code": "RATE_LIMITED", "message": "slow down"}},
                )
            wait = bool(request.url.params.get("wait"))
            if path == "/v2/media":  # bytes without a name: JSON + base64
                body = json.loads(request.content)
                return self._accept(base64.b64decode(body.pop("file_base64")), body, wait)
            body = multipart_fields(request)  # files: multipart
            files = body.pop("file")
            if path == "/v2/media/file":
                return self._accept(files, body, wait)
            self.group_sizes.append(len(files) if isinstance(files, list) else 1)
            accepted, rejected = [], []
            for index, data in enumerate(files if isinstance(files, list) else [files]):
                answer = self._accept(data, body, wait)
                if answer.is_error:
                    rejected.append({"index": index, "original_filename": None, **answer.json()["error"]})
                else:
                    accepted.append({"index": index, **answer.json()})
            return httpx.Response(202, json={"accepted": accepted, "rejected": rejected})
        if request.method == "GET" and path.startswith("/v2/media/"):
            uid = path.rsplit("/", 1)[1]
            if uid not in self.jobs:
                return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "no"}})
            return self._media(uid)
        if path == "/v2/person":
            return httpx.Response(200, json={"persons": []})
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": path}})

    def _accept(self, data: bytes, body: dict, wait: bool) -> httpx.Response:
        self.received.append(hashlib.sha256(data).hexdigest())
        if not data.startswith(b"\xff\xd8"):
            return httpx.Response(415, json={"error": {"code": "NOT_AN_IMAGE", "message": "no"}})
        sha = hashlib.sha256(data).hexdigest()
        key = sha + json.dumps({k: v for k, v in body.items() if k != "original_filename"}, sort_keys=True)
        uid = self.keys.setdefault(key, f"00000000-0000-0000-0000-{len(self.keys):012d}")
        self.jobs[uid] = {"sha": sha, "body": body}
        if self.sync and wait:  # ?wait=: answered finished, as the poll
            self.polls[uid] = 1
            return self._media(uid)
        return httpx.Response(202, json={"media_uuid": uid, "checksum": sha, "status": "queued"})

    def _media(self, uid: str) -> httpx.Response:
        """The poll answer: processing on the first look, done (one face) from the second."""
        self.polls[uid] = self.polls.get(uid, 0) + 1
        done = self.polls[uid] >= 2
        face = {"face_uuid": "f-" + uid[-4:], "x": 1, "y": 2, "width": 3, "height": 4, "angle": 0}
        face.update(detection_score=0.9, points=[], tags=[{"name": "age", "value": "40", "confidence": 1}])
        return httpx.Response(
            200,
            json={
                "media_uuid": uid,
                "checksum": self.jobs[uid]["sha"],
                "status": "done" if done else "processing",
                "error": None,
                "faces": [face] if done else [],
            },
        )


def client_for(server: FakeServer) -> Client:
    return Client("http://fq.test", "k", retry=FAST, transport=httpx.MockTransport(server))


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= retry_after(httpx.Response(429, headers={"Retry-After": when})) <= 30
    assert retry_after(httpx.Response(429)) is None
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None


def test_429_is_honoured_with_retry_after() -> None:
    server = FakeServer(refuse=2, retry_after_s="0.3")
    client = client_for(server)
    job = client.upload(encode(astronaut()), flags="bestface", batch="b1")
    assert job.status == "queued"
    times = server.upload_times
    assert len(times) == 3  # two refusals, then accepted
    # Retry-After (0.3 s) was waited, not the 0.01-0.05 s backoff.
    assert times[1] - times[0] >= 0.29 and times[2] - times[1] >= 0.29
    media = job.wait(timeout=5)
    assert media.status == "done" and media.faces[0].tag("age") == "40"
    assert server.jobs[job.media_uuid]["body"] == {"detection_flags": "bestface", "batch": "b1"}


def test_a_waited_upload_comes_back_finished_without_polling() -> None:
    server = FakeServer(sync=True)
    client = client_for(server)
    job = client.upload(encode(hopper()), wait=5)
    requests = server.requests
    assert job.media is not None and job.wait().status == "done"
    assert server.requests == requests  # no poll
    results = list(client.ingest([encode(astronaut())]))
    assert results[0].status == "done" and server.requests == requests + 1  # one request per image


def test_gives_up_after_the_retry_budget_with_the_servers_code() -> None:
    server = FakeServer(refuse=100, retry_after_s="0")
    with pytest.raises(FacequeueAPIError) as info:
        client_for(server).upload(encode(astronaut()))
    assert info.value.status == 429 and info.value.code == "RATE_LIMITED"
    assert len(server.upload_times) == FAST.attempts + 1


def test_5xx_and_connection_errors_are_retried_4xx_are_not() -> None:
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused")
        if calls["n"] == 2:
            return httpx.Response(503)
        return httpx.Response(200, json={"persons": [{"person_id": "a@x", "faces_uuids": []}]})

    client = Client("http://fq.test", "k", retry=FAST, transport=httpx.MockTransport(flaky))
    assert client.persons("all@x")[0]["person_id"] == "a@x"
    assert calls["n"] == 3
    server = FakeServer()
    with pytest.raises(FacequeueAPIError) as info:
        client_for(server).upload(b"not an image")
    assert info.value.code == "NOT_AN_IMAGE" and server.requests == 1


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEQUEUE_URL", "http://example.test:9000/")
    monkeypatch.setenv("FACEQUEUE_API_KEY", "secret")
    client = Client()
    assert client.base_url == "http://example.test:9000" and client.http.headers["x-api-key"] == "secret"
    monkeypatch.delenv("FACEQUEUE_API_KEY")
    with pytest.raises(ValueError, match="FACEQUEUE_API_KEY"):
        Client()


def test_async_client_ingest(tmp_path: Path) -> None:
    """Bytes one by one, files in groups (a bad file refused alone), retried after a 429."""
    server = FakeServer(refuse=1, retry_after_s="0.05")
    files = []
    for i, data in enumerate(
        [encode(astronaut()), b"not an image", encode(hopper()), encode(hopper(), quality=50)]
    ):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(data)
    sources = [encode(astronaut(), quality=40), b"junk", *files]

    async def main() -> list:
        async with AsyncClient("http://fq.test", "k", retry=FAST, transport=httpx.MockTransport(server)) as c:
            return [r async for r in c.ingest(sources, concurrency=4, per_request=3)]

    results = asyncio.run(main())
    assert sorted(r.status for r in results) == ["done"] * 4 + ["error"] * 2
    errors = sorted((r.source, r.error["code"]) for r in results if r.error)
    assert errors == [(str(files[1]), "NOT_AN_IMAGE"), ("<bytes>", "NOT_AN_IMAGE")]
    assert sorted(server.group_sizes) == [1, 3], "the four files in groups of 3"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """root/<person>/photo: two persons, a non-image, an image without extension, a nested folder."""
    root = tmp_path / "archive"
    (root / "Grace_Hopper" / "nested").mkdir(parents=True)
    (root / "Eileen Collins").mkdir()
    (root / "Grace_Hopper" / "a.jpg").write_bytes(encode(hopper()))
    (root / "Grace_Hopper" / "nested" / "b").write_bytes(encode(hopper(), quality=60))  # no extension
    (root / "Eileen Collins" / "c.jpeg").write_bytes(encode(astronaut()))
    (root / "Eileen Collins" / "notes.jpg").write_text("not an image despite its name")
    return root


def test_sources_by_content_manifests_and_person_folders(archive: Path, tmp_path: Path) -> None:
    items = list(iter_sources([str(archive)], person_from_folder=True, namespace="crew"))
    assert [Path(i.source).name for i in items] == ["c.jpeg", "a.jpg", "b"]
    assert [i.options["set_person_id"] for i in items] == ["Eileen Collins@crew"] + ["Grace Hopper@crew"] * 2
    (tmp_path / "list.csv").write_text("id,path\n1,archive/Grace_Hopper/a.jpg\n2,https://example.org/x.jpg\n")
    (tmp_path / "list.jsonl").write_text('{"source": "archive/Eileen Collins/c.jpeg"}\n"https://e.org/y"\n')
    manifest = [
        str(i.source) for i in iter_sources([str(tmp_path / "list.csv"), str(tmp_path / "list.jsonl")])
    ]
    assert manifest == [
        str(archive / "Grace_Hopper" / "a.jpg"),
        "https://example.org/x.jpg",
        str(archive / "Eileen Collins" / "c.jpeg"),
        "https://e.org/y",
    ]
    stdin = io.StringIO(f"# comment\n{archive}/Grace_Hopper/a.jpg\n\nhttps://e.org/z\n")
    assert len(list(iter_sources(["-"], stdin=stdin))) == 2
    assert len(list(iter_sources([f"{archive}/**/*.jp*g"]))) == 2  # globs keep images only


def _args(sources: list[str], out: Path, **extra: object) -> SimpleNamespace:
    base = dict(
        sources=sources,
        flags=None,
        namespace="",
        person_from_folder=False,
        concurrency=3,
        per_request=2,
        out=str(out),
        state=None,
        batch=None,
        timeout=10,
        quiet=True,
        url=None,
        api_key=None,
    )
    return SimpleNamespace(**{**base, **extra})


def test_ingest_resumes_from_its_state_file(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeServer()
    out = tmp_path / "results.jsonl"
    code = run_ingest(
        _args([str(archive)], out, person_from_folder=True, namespace="crew"), client_for(server)
    )
    assert code == EXIT_OK
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and {line["status"] for line in lines} == {"done"}
    assert {"source", "sha256", "media_uuid", "status", "error", "faces"} <= lines[0].keys()
    uploads = len(server.upload_times)

    # Rerun: nothing is uploaded again, not even read (unchanged size and mtime), one line per source.
    def no_read(item: object) -> None:
        raise AssertionError(f"{item} was read again")

    monkeypatch.setattr("facequeue.client.prepare", no_read)
    assert (
        run_ingest(_args([str(archive)], out, person_from_folder=True, namespace="crew"), client_for(server))
        == 0
    )
    assert len(server.upload_times) == uploads
    assert len(out.read_text().splitlines()) == 3
    assert (tmp_path / "results.jsonl.state.sqlite").exists()


def test_ingest_exit_codes(archive: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # PNG magic: sent, refused by the server
    server = FakeServer()
    assert (
        run_ingest(_args([str(bad), str(archive)], tmp_path / "o.jsonl"), client_for(server))
        == EXIT_ITEM_ERRORS
    )
    wrong_key = Client("http://fq.test", "wrong", retry=FAST, transport=httpx.MockTransport(server))
    assert run_ingest(_args([str(archive)], tmp_path / "p.jsonl"), wrong_key) == EXIT_SERVER


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """Eight distinct photos: enough that a Ctrl-C at the third upload lands mid-run."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(8):
        (root / f"{i}.jpg").write_bytes(encode(hopper() if i % 2 else astronaut(), quality=60 + 4 * i))
    return root


def test_ingest_sends_files_in_groups_that_share_their_options(
    archive: Path, many: Path, tmp_path: Path
) -> None:
    """Files go per_request to a /v2/media/files request; a group never mixes persons."""
    server = FakeServer()
    args = _args([str(many)], tmp_path / "many.jsonl", concurrency=6, per_request=3)
    assert run_ingest(args, client_for(server)) == EXIT_OK
    assert sorted(server.group_sizes) == [2, 3, 3] and len(server.keys) == 8

    server = FakeServer()
    args = _args(
        [str(archive)], tmp_path / "r.jsonl", person_from_folder=True, namespace="crew", per_request=8
    )
    args.concurrency = 8
    assert run_ingest(args, client_for(server)) == EXIT_OK
    assert sorted(server.group_sizes) == [1, 2], "Eileen Collins's photo, then Grace Hopper's two"
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    persons = {
        Path(line["source"]).name: server.jobs[line["media_uuid"]]["body"]["set_person_id"] for line in lines
    }
    assert persons == {
        "c.jpeg": "Eileen Collins@crew",
        "a.jpg": "Grace Hopper@crew",
        "b": "Grace Hopper@crew",
    }


@pytest.mark.parametrize("inherited", [signal.default_int_handler, signal.SIG_IGN])
@pytest.mark.parametrize("where", ["auth check", "third upload", "summary"])
def test_ctrl_c_anywhere_stops_with_130_and_the_rerun_does_the_rest_once(
    many: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, inherited: object
) -> None:
    """SIGINT before the loop, mid-run (sent from a pool thread) or during the summary: exit code 130,
    what finished is kept; with SIGINT ignored by the parent (a shell's `cmd &`) as well."""
    server = FakeServer()

    def interrupting(request: httpx.Request) -> httpx.Response:
        third_upload = request.method == "POST" and len(server.upload_times) == 2
        if (where == "auth check" and server.requests == 0) or (where == "third upload" and third_upload):
            os.kill(os.getpid(), signal.SIGINT)  # from the main thread, or from a pool thread
        return server(request)

    if where == "summary":
        table = ingest.summary_table

        def interrupted_once(*args: object) -> str:
            monkeypatch.setattr(ingest, "summary_table", table)
            os.kill(os.getpid(), signal.SIGINT)
            return table(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(ingest, "summary_table", interrupted_once)
    out = tmp_path / "results.jsonl"
    previous = signal.signal(signal.SIGINT, inherited)  # type: ignore[arg-type]
    try:
        client = Client("http://fq.test", "k", retry=FAST, transport=httpx.MockTransport(interrupting))
        code = run_ingest(_args([str(many)], out, concurrency=1), client)
        assert signal.getsignal(signal.SIGINT) is inherited, "the caller's disposition is restored"
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == EXIT_INTERRUPTED
    done_before = (
        [json.loads(line)["sha256"] for line in out.read_text().splitlines()] if out.exists() else []
    )
    if where == "third upload":
        assert 1 <= len(done_before) < 8, "stopped mid-run, and stopped submitting"
    uploads_before = len(server.received)

    assert run_ingest(_args([str(many)], out), client_for(server)) == EXIT_OK
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 8 and {line["status"] for line in lines} == {"done"}
    # (an upload the interrupted run had in flight may land after `uploads_before`: counted, not a re-send)
    assert not set(done_before) & set(server.received[uploads_before:]), "what was done is not sent again"
    assert len(server.keys) == 8, "one job per photo"
