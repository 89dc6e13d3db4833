"""Outbound HTTP for image_url downloads and callbacks, refusing private addresses (SSRF).

The host is resolved once, every address is checked, and the connection goes to the checked address
(with the original Host header and TLS server name), so DNS rebinding cannot slip past the check.
Redirects are followed by hand and each hop is checked again.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from facequeue.settings import Settings
from schema.errors import ErrorCode, FacequeueError

MAX_REDIRECTS = 5
USER_AGENT = "facequeue/0.1 (+self-hosted face analysis)"


def check_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str, settings: Settings
) -> None:
    """URL_FORBIDDEN unless the address is public or in FACEQUEUE_URL_ALLOWED_NETWORKS."""
    allowed = [ipaddress.ip_network(n.strip()) for n in settings.url_allowed_networks.split(",") if n.strip()]
    if any(address in net for net in allowed):
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        raise FacequeueError(ErrorCode.URL_FORBIDDEN, f"{host} is {address}, which is not public")


def check_url(url: str, field: str = "the URL") -> tuple[str, str, int]:
    """Syntax check; returns (scheme, host, port). Cheap: used by the api before enqueueing."""
    invalid = f"{field} is not a valid http(s) URL"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FacequeueError(ErrorCode.URL_INVALID, invalid) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FacequeueError(ErrorCode.URL_INVALID, invalid)
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve_public(host: str, port: int, settings: Settings) -> str:
    """Resolve host and return one address that may be contacted, or raise URL_FORBIDDEN / URL_UNREACHABLE."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FacequeueError(ErrorCode.URL_UNREACHABLE, f"cannot resolve {host}") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        check_address(address, host, settings)
    return str(addresses[0])


def _pinned_request(
    client: httpx.Client, method: str, url: str, settings: Settings, **kwargs
) -> httpx.Response:  # type: ignore[no-untyped-def]
    scheme, host, port = check_url(url)
    address = resolve_public(host, port, settings)
    parts = urlsplit(url)
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
    request = client.build_request(
        method, pinned, headers=headers, extensions={"sni_hostname": host}, **kwargs
    )
    return client.send(request, stream=True)


def download(url: str, settings: Settings) -> bytes:
    """GET an image URL within the size and time limits."""
    deadline = time.monotonic() + settings.url_timeout_s
    timeout = httpx.Timeout(settings.url_timeout_s)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                response = _pinned_request(client, "GET", url, settings)
                if response.is_redirect:
                    response.close()
                    url = urljoin(url, response.headers["location"])
                    continue
                try:
                    if response.status_code >= 400:
                        raise FacequeueError(
                            ErrorCode.URL_HTTP_ERROR, f"{url} answered {response.status_code}"
                        )
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > settings.max_upload_bytes:
                        raise FacequeueError(ErrorCode.URL_TOO_LARGE)
                    chunks, total = [], 0
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > settings.max_upload_bytes:
                            raise FacequeueError(ErrorCode.URL_TOO_LARGE)
                        if time.monotonic() > deadline:
                            raise FacequeueError(ErrorCode.URL_TIMEOUT)
                        chunks.append(chunk)
                    return b"".join(chunks)
                finally:
                    response.close()
            raise FacequeueError(ErrorCode.URL_UNREACHABLE, f"more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as exc:
        raise FacequeueError(ErrorCode.URL_TIMEOUT) from exc
    except httpx.HTTPError as exc:
        raise FacequeueError(ErrorCode.URL_UNREACHABLE, f"{type(exc).__name__}: {exc}") from exc


def post_json(url: str, payload: dict, settings: Settings, headers: dict[str, str] | None = None) -> int:
    """POST a callback; returns the status code. Redirects are not followed for callbacks."""
    with httpx.Client(timeout=httpx.Timeout(settings.url_timeout_s)) as client:
        response = _pinned_request(client, "POST", url, settings, json=payload, headers=headers or {})
        response.close()
        return response.status_code
