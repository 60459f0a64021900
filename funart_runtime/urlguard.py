"""Checks that a URL the runtime will call points at a public address.

Webhook targets and input URLs come from callers. Unless
FUNART_ALLOW_PRIVATE_URLS is set, loopback, private, link-local, shared (CGNAT, which
contains Alibaba Cloud's metadata address 100.100.100.200) and other non-global addresses
are rejected, after DNS resolution.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import URLNotAllowedError


def check_url(url: str, *, allow_private: bool, what: str = "URL") -> None:
    """Raise URLNotAllowedError unless ``url`` is http(s) and resolves to global addresses."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise URLNotAllowedError(
            f"Invalid {what} {url!r}: use an http:// or https:// URL with a host name.",
            details={"url": url},
        )
    if allow_private:
        return

    for address in _resolve(parts.hostname, url, what):
        if not address.is_global:
            raise URLNotAllowedError(
                f"The {what} {url!r} resolves to {address}, a loopback, private, link-local or "
                "metadata address. Use a public URL, or set FUNART_ALLOW_PRIVATE_URLS=true "
                "for local testing.",
                details={"url": url, "address": str(address)},
            )


def _resolve(host: str, url: str, what: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise URLNotAllowedError(
            f"The host of the {what} {url!r} cannot be resolved: {exc.strerror}.",
            details={"url": url},
        ) from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]
