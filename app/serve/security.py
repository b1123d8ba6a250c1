"""What a request may make the server do: API keys, which hosts and files a video URL may name, body size.

Source hosts (server-side request forgery): a URL's host is resolved and refused when any address it
resolves to is not globally routable (loopback, private, link-local such as the cloud metadata address
169.254.169.254, carrier-grade NAT, multicast, reserved) unless the host, the address or a network
holding it is listed in serve.allowed_source_hosts. Known gap: the decoder resolves the name again when it
connects (DNS rebinding) and ffmpeg follows HTTP redirects; see README, HTTP API.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import ipaddress
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longwatch.app.serve.errors import APIError, error_body
from longwatch.ingest.uri import redact

KEYS_ENV = "LONGWATCH_API_KEYS"
"""Comma-separated API keys; they add to serve.api_key_file's."""
RESOLVE_TIMEOUT_S = 5.0
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="serve-resolve")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def load_api_keys(path: str, env: Mapping[str, str] = os.environ) -> frozenset[str]:
    """Keys from `path` (one per line, blank lines and # comments skipped) and $LONGWATCH_API_KEYS.

    ValueError naming the file when it cannot be read or holds no key.
    """
    keys = {k.strip() for k in env.get(KEYS_ENV, "").split(",") if k.strip()}
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"cannot read the API key file {path}: {e.strerror or e}") from None
        found = {ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")}
        if not found:
            raise ValueError(f"the API key file {path} holds no key (one per line)")
        keys |= found
    return frozenset(keys)


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: an address only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bearer(authorization: str | None, keys: frozenset[str]) -> None:
    """APIError 401 unless `authorization` is 'Bearer KEY' with a known key (no keys: anything passes)."""
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(401, "missing API key: send the header 'Authorization: Bearer KEY'", "invalid_api_key")
    token = token.strip()
    if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise APIError(401, "incorrect API key", "invalid_api_key")


def _unmapped(addr: Address) -> Address:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def public(addr: Address) -> bool:
    """Globally routable unicast: what a camera URL may reach without being listed."""
    addr = _unmapped(addr)
    return addr.is_global and not addr.is_multicast


def resolve(host: str, timeout: float = RESOLVE_TIMEOUT_S) -> list[Address]:
    """Every address `host` resolves to (an IP literal is itself); APIError 400 when it does not resolve."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    future = _resolver.submit(socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise APIError(400, f"the host {host!r} did not resolve within {timeout:g} s", "unresolvable_host") from None
    except (OSError, UnicodeError):
        raise APIError(400, f"the host {host!r} does not resolve", "unresolvable_host") from None
    return sorted({_unmapped(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos}, key=str)


class SourcePolicy:
    """Turns a URL from a request into a source string for ingest, or refuses it (APIError 400 / 403)."""

    def __init__(self, schemes: tuple[str, ...], allowed_hosts: tuple[str, ...], media_root: str) -> None:
        self.schemes = tuple(s.lower() for s in schemes)
        self.hosts = {h.lower() for h in allowed_hosts if "/" not in h}
        self.networks = [ipaddress.ip_network(h, strict=False) for h in allowed_hosts if "/" in h]
        self.media_root = Path(media_root).resolve() if media_root else None

    def check(self, url: str, param: str) -> str:
        """The ingest source for `url`: the URL itself, or the local path of a file:// URL."""
        text = url.strip()
        m = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
        if not m:
            raise APIError(400, f"{redact(text)[:200]!r} is not a URL (use http(s)://, rtsp(s)://, rtmp(s):// or "
                           "file:// under the server's --allowed-local-media-path)", "invalid_url", param)
        scheme = m.group(1).lower()
        if scheme == "file":
            return self._local(text, param)
        if scheme not in self.schemes:
            raise APIError(400, f"the scheme {scheme}:// is not allowed (allowed: "
                           f"{', '.join(s + '://' for s in self.schemes)})", "unsupported_scheme", param)
        try:
            host = urlsplit(text).hostname
        except ValueError:
            host = None
        if not host:
            raise APIError(400, f"{redact(text)!r} has no host", "invalid_url", param)
        self._check_host(host.lower(), param)
        return text

    def _check_host(self, host: str, param: str) -> None:
        if host in self.hosts:
            return
        for addr in resolve(host):
            listed = str(addr) in self.hosts or any(addr in net for net in self.networks)
            if not listed and not public(addr):
                raise APIError(403, f"the host {host} ({addr}) is a loopback, private or link-local address; the "
                               f"server refuses it unless started with --allowed-source-hosts {host}",
                               "source_host_not_allowed", param)

    def _local(self, text: str, param: str) -> str:
        if self.media_root is None:
            raise APIError(403, "local files are not allowed: the server was started without "
                           "--allowed-local-media-path", "local_media_not_allowed", param)
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise APIError(400, f"file:// URLs name no host (got {parts.netloc!r})", "invalid_url", param)
        path = Path(unquote(parts.path)).resolve()  # symlinks resolved: a link out of the folder is outside it
        if not path.is_relative_to(self.media_root):
            raise APIError(403, f"{path} is outside the allowed folder {self.media_root} "
                           "(--allowed-local-media-path)", "local_media_not_allowed", param)
        if not path.is_file():
            raise APIError(404, f"no such file: {path}", "file_not_found", param)
        return str(path)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 (by Content-Length or while read)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.message)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    @property
    def message(self) -> str:
        return f"the request body is over {self.limit // 1024} KiB (serve.max_request_kb)"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body(413, self.message, "request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised while a body is read; an HTTPException, so FastAPI passes it on instead of calling it a parse error."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)
