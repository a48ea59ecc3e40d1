"""Which callback URLs aig will POST to: the SSRF guard shared by createTask and webhooks.

A customer-supplied URL is checked when the task is created (422 at once) and again right
before every delivery attempt, because DNS can change between the two. Only http(s) URLs
whose every resolved address is public are allowed, unless the host is on the operator's
allow-list (`AIG_WEBHOOK_ALLOW_HOSTS`, comma-separated host names or IP literals; tests
put 127.0.0.1 there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from urllib.parse import urlsplit

ALLOW_HOSTS_ENV = "AIG_WEBHOOK_ALLOW_HOSTS"
# Cloud metadata endpoints that are not covered by the private/link-local ranges.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class CallbackUrlRefused(ValueError):
    """The URL may not be called; the message says why, for the caller's 422."""


def allowed_hosts_from_env() -> frozenset[str]:
    raw = os.environ.get(ALLOW_HOSTS_ENV, "")
    return frozenset(host.strip().lower() for host in raw.split(",") if host.strip())


def is_public_address(address: str) -> bool:
    """Whether an IP address is one aig may call: global unicast, not multicast."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _split(url: str) -> tuple[str, int]:
    if not isinstance(url, str) or len(url) > 2048:
        raise CallbackUrlRefused("callBackUrl must be an http(s) URL of at most 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackUrlRefused("callBackUrl must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise CallbackUrlRefused("callBackUrl must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise CallbackUrlRefused("callBackUrl has an invalid port") from error
    return parts.hostname.lower(), port


async def check_callback_url(url: str, allow_hosts: frozenset[str] | None = None) -> None:
    """Raises `CallbackUrlRefused` unless every address `url` resolves to is public."""
    host, port = _split(url)
    allowed = allowed_hosts_from_env() if allow_hosts is None else allow_hosts
    if host in allowed:
        return
    if host in _METADATA_HOSTS:
        raise CallbackUrlRefused(f"callBackUrl host {host!r} is a metadata endpoint")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise CallbackUrlRefused(f"callBackUrl host {host!r} does not resolve") from error
    addresses = {str(info[4][0]) for info in infos}
    if not addresses:
        raise CallbackUrlRefused(f"callBackUrl host {host!r} does not resolve")
    for address in addresses:
        if address in allowed:
            continue
        if not is_public_address(address):
            raise CallbackUrlRefused(
                f"callBackUrl resolves to a private, loopback, link-local or reserved "
                f"address ({address}); aig only calls public addresses"
            )
