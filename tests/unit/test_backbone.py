"""Fast checks of the backbone's pure pieces: flags, error table, URL safety, image sniffing, job claims."""

from __future__ import annotations

import io
import socket

import pytest
from PIL import Image

from facequeue.settings import Settings
from schema.errors import ErrorCode, FacequeueError
from schema.flags import normalise_flags, parse_flags
from schema.images import sniff
from workers.http import check_url, resolve_public


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {"propoints", "classifiers"}),
        (None, {"propoints", "classifiers"}),
        (" ; ", {"propoints", "classifiers"}),
        ("bestface", {"bestface"}),  # Betaface's "recognition only" example: nothing else
        ("basic", {"basic"}),
        ("bestface,classifiers", {"bestface", "classifiers"}),
        ("propointsclassifiersextended", {"propoints", "classifiers", "extended"}),
        ("Classifiers; LIVENESS", {"classifiers", "liveness"}),
        ("bestface|basic", {"bestface", "basic"}),
    ],
)
def test_flags(raw: str | None, expected: set[str]) -> None:
    assert parse_flags(raw) == expected


@pytest.mark.parametrize("raw", ["foobar", "classifiers,foobar", "propointsx", "best face", "classifier"])
def test_unknown_flags_are_an_error_listing_the_known_ones(raw: str) -> None:
    with pytest.raises(FacequeueError) as caught:
        parse_flags(raw)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert "bestface" in caught.value.message and "basic" in caught.value.message


def test_flags_normal_form_is_order_free() -> None:
    assert normalise_flags("extended bestface") == normalise_flags("bestface,extended") == "bestface,extended"


def test_error_codes_are_unique() -> None:
    assert len({code.v1 for code in ErrorCode}) == len(ErrorCode)
    assert all(code.v1 < 0 for code in ErrorCode)
    assert ErrorCode.from_v1(-13) is ErrorCode.NOT_AN_IMAGE


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_sniff_reads_the_header_only() -> None:
    assert sniff(png((30, 20)), 10_000, 10_000) == ("PNG", 30, 20)
    with pytest.raises(FacequeueError) as bomb:
        sniff(png((5000, 5000), "1"), 10_000_000, 1_000_000)
    assert bomb.value.code is ErrorCode.IMAGE_TOO_MANY_PIXELS
    with pytest.raises(FacequeueError) as text:
        sniff(b"just text", 100, 100)
    assert text.value.code is ErrorCode.NOT_AN_IMAGE
    with pytest.raises(FacequeueError) as big:
        sniff(png((30, 20)), 10, 10_000)
    assert big.value.code is ErrorCode.IMAGE_TOO_LARGE


@pytest.mark.parametrize("url", ["ftp://a.org/x", "http://", "not a url", "http://a.org:99999/"])
def test_invalid_urls(url: str) -> None:
    with pytest.raises(FacequeueError) as error:
        check_url(url)
    assert error.value.code is ErrorCode.URL_INVALID


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.8", "192.168.1.1", "169.254.169.254", "::1", "0.0.0.0", "fc00::1"]
)
def test_private_addresses_refused(host: str) -> None:
    with pytest.raises(FacequeueError) as error:
        resolve_public(host, 80, Settings())
    assert error.value.code is ErrorCode.URL_FORBIDDEN


def test_allowed_networks_exempt_only_themselves() -> None:
    settings = Settings(url_allowed_networks="127.0.0.2/32")
    assert resolve_public("127.0.0.2", 80, settings) == "127.0.0.2"
    with pytest.raises(FacequeueError):
        resolve_public("127.0.0.1", 80, settings)


def test_names_resolving_to_loopback_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A public-looking name whose DNS answer is private (the rebinding trick) is refused.
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))],
    )
    with pytest.raises(FacequeueError) as error:
        resolve_public("images.example.org", 80, Settings())
    assert error.value.code is ErrorCode.URL_FORBIDDEN
