"""The wire boundary (strings, recognition numbers), the SSRF address policy, log redaction, the transient /
deterministic split of job failures, blob retention across tenants and stored face crops."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session

from api.logs import RedactSecrets, redact
from facequeue.settings import Settings
from schema.blobs import drop_blob, get_blob, put_blob, sha256_hex
from schema.errors import ErrorCode, FacequeueError
from schema.inputs import _FORBIDDEN, Filename, Short, WireModel, check_text, has_forbidden, text_problem
from schema.tables import Base
from workers import http, jobs
from workers.pipeline.crops import CROP_MAX_SIDE, crop_rgb, make_crop, to_crop
from workers.recognize import parse_parameters

# --- strings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["\x00", "a\x00b", "\ud800", "x\udfff", "\x1b[2J", "\x7f", "\x85", "\x08", "\x0b"]
)
def test_control_characters_and_surrogates_refused(bad: str) -> None:
    assert text_problem(bad) is not None
    with pytest.raises(FacequeueError) as error:
        check_text(bad, "field")
    assert error.value.code == ErrorCode.INVALID_REQUEST and error.value.message.startswith("field ")


@pytest.mark.parametrize("good", ["", "plain", "tab\there", "lines\r\nok", "Zoë Ødegård 李", "emoji 😀"])
def test_ordinary_text_passes(good: str) -> None:
    assert check_text(good, "field") == good


def test_length_limit_named_in_the_message() -> None:
    with pytest.raises(FacequeueError, match="501 characters long; at most 500"):
        check_text("f" * 501, "original_filename", 500)


def test_long_strings_checked_like_short_ones() -> None:
    """Long ASCII strings (base64 images) take a numpy path: it must agree with the regex on every character,
    wherever it sits, including wrapped base64 (LF, CR LF) and the edges of the ASCII range."""
    base = "QUJD" * 2000  # 8,000 characters of base64
    for code in range(0x100):
        for where in (0, 4321, len(base)):
            value = base[:where] + chr(code) + base[where:]
            assert has_forbidden(value) == (_FORBIDDEN.search(value) is not None), (code, where)
    wrapped = "\r\n".join(base[i : i + 76] for i in range(0, len(base), 76))
    assert not has_forbidden(wrapped)
    assert text_problem(wrapped + "\x00", max_length=len(wrapped) + 1).endswith(f"at position {len(wrapped)}")


class Sample(WireModel):
    name: Filename | None = None
    ids: list[Short] = []
    free: str = ""


def test_wire_model_checks_every_string_nested_and_unknown() -> None:
    for payload in (
        {"name": "a\x00"},
        {"ids": ["ok", "\ud800"]},
        {"free": "\x00"},
        {"unknown": {"deep": ["\x00"]}},
        {"k\x00": 1},
    ):
        with pytest.raises(ValidationError):
            Sample.model_validate(payload)
    with pytest.raises(ValidationError, match="at most 500"):
        Sample(name="n" * 501)
    with pytest.raises(ValidationError, match="at most 2048"):
        Sample(free="n" * 2049)  # plain str fields are bounded too
    assert Sample(name="ok.jpg", ids=["a"], free="x").name == "ok.jpg"
    schema = Sample.model_json_schema()["properties"]
    assert schema["free"]["maxLength"] == 2048 and schema["ids"]["items"]["maxLength"] == 256


def test_every_request_body_is_a_bounded_wire_model() -> None:
    """One layer: every JSON body of every route is a WireModel, and every string in it has a maxLength."""
    from api.app import create_app

    openapi = create_app().openapi()
    components = openapi["components"]["schemas"]

    def subclasses(cls: type) -> set[str]:
        return {cls.__name__} | {name for sub in cls.__subclasses__() for name in subclasses(sub)}

    wire_models = subclasses(WireModel)
    schemas = [
        body["content"]["application/json"]["schema"]
        for path in openapi["paths"].values()
        for operation in path.values()
        if "application/json" in (body := operation.get("requestBody", {})).get("content", {})
    ]
    bodies = {schema["$ref"].rsplit("/", 1)[-1] for schema in schemas if "$ref" in schema}
    assert len(bodies) >= 12 and bodies <= wire_models, bodies - wire_models
    inline = [schema for schema in schemas if "$ref" not in schema]  # documented by hand (vendor routes)

    def strings(schema: dict) -> list[dict]:
        if schema.get("type") == "string":
            return [schema]
        found = [s for option in schema.get("anyOf", []) for s in strings(option)]
        return found + (strings(schema["items"]) if "items" in schema else [])

    # Hand-documented bodies (vendor routes that parse their own body) are checked by schema.inputs.check_json
    # or a WireModel in the route; only the generated schemas are held to maxLength here.
    inline = [schema for schema in inline if "title" in schema]  # generated from a model
    for name, schema in [*((name, components[name]) for name in bodies), *(("inline", s) for s in inline)]:
        for field, property_schema in schema["properties"].items():
            for string in strings(property_schema):
                assert "maxLength" in string, f"{name}.{field} has no length limit"


# --- numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "fmr:nan",
        "fmr:inf",
        "threshold:NaN",
        "threshold:-inf",
        "threshold:1e999",
        "threshold:101",
        "min_match_score:nan",
        "min_match_score:-0.1",
        "min_match_score:1.5",
        "max_results:1e3",
        "max_results:0",
        "max_results:1001",
        "fmr:0.5",
        "colour:blue",
        "max_results",
        "fmr:1e-3,fmr:1e-4",
    ],
)
def test_bad_parameters(text: str) -> None:
    with pytest.raises(FacequeueError) as error:
        parse_parameters(text, 1e-3)
    assert error.value.code == ErrorCode.INVALID_REQUEST


def test_good_parameters() -> None:
    params = parse_parameters(" Max_Results:5 ; min_match_score:0.25, fmr:1e-5 ,", 1e-3)
    assert (params.max_results, params.min_match_score, params.fmr) == (5, 0.25, 1e-5)
    assert parse_parameters("threshold:-1.5", 1e-3).raw_threshold == -1.5  # fused distances are z-scores


# --- SSRF -------------------------------------------------------------------------------------------------

FORBIDDEN = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "100.64.0.1",
    "192.0.0.9",
    "192.88.99.1",
    "224.0.0.251",
    "255.255.255.255",
    "0.0.0.0",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "100::1",
    "2001:db8::1",
    "3fff::1",
    "2001:2::1",
    "2001:10::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::8.8.8.8",  # IPv4-compatible, deprecated even when public
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::808:808",  # local-use NAT64: never global
    "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
    "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45 (documentation)
    "2001:0:7f00:1::1",  # Teredo via a loopback server
]
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "64:ff9b::808:808",
    "::ffff:8.8.8.8",
    "2002:808:808::1",
]


def settings(**update: object) -> Settings:
    return Settings(**{"url_allowed_networks": "", **update})


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address: str) -> None:
    with pytest.raises(FacequeueError) as error:
        http.check_address(ipaddress.ip_address(address), "host.example", settings())
    assert error.value.code == ErrorCode.URL_FORBIDDEN


@pytest.mark.parametrize("address", ALLOWED)
def test_global_unicast_allowed(address: str) -> None:
    http.check_address(ipaddress.ip_address(address), "host.example", settings())


def test_allowed_networks_cover_embedded_forms() -> None:
    closed = settings(url_allowed_networks="10.0.0.0/8")
    http.check_address(ipaddress.ip_address("10.1.2.3"), "h", closed)
    http.check_address(ipaddress.ip_address("::ffff:10.1.2.3"), "h", closed)
    with pytest.raises(FacequeueError):
        http.check_address(ipaddress.ip_address("::ffff:127.0.0.1"), "h", closed)


@pytest.fixture
def resolver(monkeypatch):  # type: ignore[no-untyped-def]
    """Offline DNS: names resolve to what the test says; no packet leaves the machine."""
    answers: dict[str, str] = {}
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in answers:
            family = socket.AF_INET6 if ":" in answers[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(http.socket, "getaddrinfo", fake)
    return answers


def no_traffic(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a request was sent to a forbidden address")

    monkeypatch.setattr(http.httpx.Client, "send", refuse)


@pytest.mark.parametrize(
    "address", ["64:ff9b::a9fe:a9fe", "::ffff:127.0.0.1", "2002:a9fe:a9fe::1", "fd00::1"]
)
def test_download_and_callback_refuse_before_connecting(resolver, monkeypatch, address: str) -> None:
    resolver["metadata.test"] = address
    no_traffic(monkeypatch)
    for call in (
        lambda: http.download("http://metadata.test/latest/meta-data/", settings()),
        lambda: http.post_json("http://metadata.test/hook", {"a": 1}, settings()),
        lambda: http.download(f"http://[{address}]/x", settings()),
    ):
        with pytest.raises(FacequeueError) as error:
            call()
        assert error.value.code == ErrorCode.URL_FORBIDDEN


def test_redirect_to_an_embedded_private_address_refused(resolver) -> None:
    """A public-looking (allowed) server redirects to a NAT64 form of the metadata address."""
    resolver["metadata.test"] = "64:ff9b::a9fe:a9fe"

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://metadata.test/latest/")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FacequeueError) as error:
            http.download(
                f"http://127.0.0.2:{server.server_address[1]}/a.jpg",
                settings(url_allowed_networks="127.0.0.2/32"),
            )
        assert error.value.code == ErrorCode.URL_FORBIDDEN and "169.254.169.254" in error.value.message
    finally:
        server.shutdown()


# --- logs ---------------------------------------------------------------------------------------------------


def test_redaction() -> None:
    line = 'GET /v2/media/x?api_key=SECRET123&embeddings=true HTTP/1.1" 200'
    assert "SECRET123" not in redact(line) and "api_key=[redacted]&embeddings=true" in redact(line)
    assert redact("/v1/x?API_KEY=a%20b") == "/v1/x?API_KEY=[redacted]"
    assert redact("monkey=banana") == "monkey=banana"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/v2/media/x?api_key=SECRET123", "1.1", 200),
        None,
    )
    assert RedactSecrets().filter(record)
    assert "SECRET123" not in record.getMessage() and len(record.args) == 5  # positions kept for uvicorn


# --- job failures -------------------------------------------------------------------------------------------


def test_transient_or_deterministic() -> None:
    assert jobs.is_transient(OperationalError("SELECT 1", {}, Exception("server closed the connection")))
    assert jobs.is_transient(ConnectionError())
    assert not jobs.is_transient(DataError("INSERT", {}, Exception("invalid input syntax for type json")))
    assert not jobs.is_transient(KeyError("faces_uuids"))
    assert not jobs.is_transient(ValueError("Out of range float values are not JSON compliant"))


# --- blobs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["db", "dir"])
def test_dropped_bytes_come_back_with_a_new_upload(tmp_path, store: str) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'blobs.sqlite'}")
    Base.metadata.create_all(engine)
    config = Settings(home=tmp_path, blob_store=store, blob_dir=tmp_path / "blobs")
    with Session(engine) as session:
        sha = put_blob(session, config, b"tenant A's photo")
        drop_blob(session, config, sha)
        session.commit()
        assert get_blob(session, config, sha) is None
        assert put_blob(session, config, b"tenant A's photo") == sha == sha256_hex(b"tenant A's photo")
        session.commit()
        assert get_blob(session, config, sha) == b"tenant A's photo"  # tenant B's upload restored it
        put_blob(session, config, b"tenant A's photo")  # a live blob is left alone
        session.commit()
        assert get_blob(session, config, sha) == b"tenant A's photo"


# --- crops --------------------------------------------------------------------------------------------------


def test_crop_keeps_geometry() -> None:
    y, x = np.mgrid[0:3000, 0:2000]
    rgb = np.dstack([x * 255 // 1999, y * 255 // 2999, np.full_like(x, 128)]).astype(np.uint8)  # smooth
    box = np.array([700.0, 1100.0, 1300.0, 1700.0])
    eyes = np.array([[850.0, 1300], [1150, 1300], [1000, 1450], [880, 1550], [1120, 1550]])
    crop = make_crop(rgb, box, eyes)
    pixels = crop_rgb(crop)
    assert max(pixels.shape[:2]) <= CROP_MAX_SIDE
    assert np.allclose(crop.landmarks5, to_crop(eyes, crop))
    # A point of the image lands on the same content in the crop.
    x, y = to_crop([[1000.0, 1400.0]], crop)[0]
    for px, py in ((1000.0, 1400.0), (700.0, 1100.0), (1300.0, 1700.0)):
        cx, cy = to_crop([[px, py]], crop)[0]
        assert np.abs(pixels[int(cy), int(cx)].astype(int) - rgb[int(py), int(px)].astype(int)).max() <= 4
