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


# The allow-list. IPv4: what Python calls global, less multicast and IANA blocks it still calls global
# (192.0.0.0/24 protocol assignments, 192.88.99.0/24 the 6to4 relay anycast). IPv6: global unicast
# 2000::/3 only, less the special-purpose blocks inside it; forms that carry an IPv4 address are judged by
# that address.
IPV4_NOT_FETCHABLE = tuple(ipaddress.ip_network(n) for n in ("192.0.0.0/24", "192.88.99.0/24"))
IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
IPV6_NOT_FETCHABLE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments (Teredo, 2001::/32, is judged by its IPv4 addresses first)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "2620:4f:8000::/48",  # AS112 direct delegation
    )
)
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: last 32 bits are the IPv4 address
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a site's own translator, never global
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries or translates to (mapped, compatible, 6to4, Teredo server
    and client, well-known NAT64); empty for a plain IPv6 address."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in NAT64_WELL_KNOWN or address in IPV4_COMPATIBLE:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return []


def address_problem(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> str | None:
    """Why the address may not be fetched, or None: the one policy for image URLs, redirects, callbacks."""
    if isinstance(address, ipaddress.IPv4Address):
        if not address.is_global or address.is_multicast or any(address in n for n in IPV4_NOT_FETCHABLE):
            return "not a public address"
        return None
    if address in NAT64_LOCAL_USE:
        return "a local-use NAT64 address"
    if address.scope_id:
        return "a scoped address"
    carried = embedded_ipv4(address)
    for ipv4 in carried:
        if (problem := address_problem(ipv4)) is not None:
            return f"carries {ipv4}, {problem}"
    if address in IPV4_COMPATIBLE:
        return "an IPv4-compatible address (deprecated)"
    if carried:
        return None  # mapped, NAT64, 6to4, Teredo: judged by the IPv4 addresses they reach
    if address not in IPV6_GLOBAL_UNICAST or any(address in n for n in IPV6_NOT_FETCHABLE):
        return "not a global unicast address"
    return None


def check_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str, settings: Settings
) -> None:
    """URL_FORBIDDEN unless the address is global unicast (`address_problem`) or in
    FACEQUEUE_URL_ALLOWED_NETWORKS (closed networks, tests)."""
    allowed = [ipaddress.ip_network(n.strip()) for n in settings.url_allowed_networks.split(",") if n.strip()]
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates += embedded_ipv4(address)
    if any(candidate in net for candidate in candidates for net in allowed):
        return
    if (problem := address_problem(address)) is not None:
        raise FacequeueError(ErrorCode.URL_FORBIDDEN, f"{host} is {address}, {problem}")


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
