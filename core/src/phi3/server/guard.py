"""The guard in front of every route: who may talk to this server, before any work is done.

A local server is reachable by every web page the user visits: a page can send "simple" cross-site
requests without asking (a ``text/plain`` POST), and a DNS-rebinding page can even read the answers
(Ollama's CVE-2024-28224). So, in this order, each a one-line OpenAI-style error:

1. ``Host`` must be an IP address, ``localhost`` (or ``*.localhost``), the bound host, or one named with
   ``--allowed-host`` (403 ``host_not_allowed``): a rebinding page's own domain never is.
2. ``Origin``, when a browser sends one, must be a loopback origin or one named with ``--cors-origin``
   (403 ``origin_not_allowed``).
3. The API key on ``/v1`` routes (401), compared in constant time.
4. A body must be ``application/json`` (415): a browser must then ask first (a CORS preflight), which
   only ``--cors-origin`` origins pass.
5. The body size limit (413), without buffering an oversized body.

An ASGI middleware rather than a FastAPI dependency, so it runs before anything reads the body. It
also counts every answer by route and status for ``/metrics``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from phi3.server.errors import APIError
from phi3.server.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/responses", "/health", "/metrics")
"""Routes counted under their own name in ``/metrics`` (the rest, including ``/v1/models/{id}``, count
as ``other``, so a client cannot grow the label set)."""


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


LOOPBACK_NAMES = ("localhost",)
BODY_METHODS = (b"POST", b"PUT", b"PATCH")


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an origin's netloc, lower case, without port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    return is_ip(name) and ipaddress.ip_address(name).is_loopback


class Guard:
    """ASGI middleware: host, origin, API key, content type and body size, before any parsing (see the
    module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body_bytes: int,
        metrics: Metrics,
        allowed_hosts: Iterable[str] = (),
        cors_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes
        self.metrics = metrics
        self.hosts = {host_name(h) for h in allowed_hosts}
        self.origins = {o.rstrip("/").lower() for o in cors_origins}

    def _host_allowed(self, host: bytes | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        name = host_name(host.decode("latin-1"))
        return is_ip(name) or is_loopback(name) or name in self.hosts or "*" in self.hosts

    def _origin_allowed(self, origin: bytes | None, host: bytes | None) -> bool:
        if origin is None:  # not a browser's cross-origin-capable request
            return True
        text = origin.decode("latin-1").rstrip("/").lower()
        if text in self.origins or "*" in self.origins:
            return True
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            return False
        # same-origin: a page this server served (the chat page at /) calling it by an IP address or a
        # name given with --allowed-host (not through "*": a DNS-rebinding page is same-origin too)
        name = host_name(parts.netloc)
        same_origin = host is not None and parts.netloc == host.decode("latin-1").strip().lower()
        return is_loopback(name) or (same_origin and (is_ip(name) or name in self.hosts))

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes], path: str) -> APIError | None:
        """Why this request is refused before it reaches a route, or None."""
        if not self._host_allowed(headers.get(b"host")):
            host = headers.get(b"host", b"").decode("latin-1")
            return APIError(
                403,
                f"host {host!r} is not allowed; requests must name this server by an IP address or localhost, "
                "or start phi3 serve with --allowed-host NAME",
                type="permission_error",
                code="host_not_allowed",
            )
        if not self._origin_allowed(headers.get(b"origin"), headers.get(b"host")):
            origin = headers.get(b"origin", b"").decode("latin-1")
            return APIError(
                403,
                f"origin {origin!r} is not allowed; start phi3 serve with --cors-origin {origin} to let pages "
                "from it use this server",
                type="permission_error",
                code="origin_not_allowed",
            )
        if self.key is not None and path.startswith("/v1") and scope.get("method") != "OPTIONS":
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return APIError(
                    401,
                    "missing or wrong API key; send the header 'Authorization: Bearer KEY' "
                    "with the key the server was started with",
                    code="invalid_api_key",
                )
        if str(scope.get("method", "")).encode() in BODY_METHODS:
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                shown = kind.decode("latin-1") or "none"
                return APIError(
                    415,
                    f"the request body must be JSON, sent with 'Content-Type: application/json' (got {shown})",
                    code="unsupported_media_type",
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._guarded_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
            await send(message)

        try:
            await self._guarded(scope, receive, counting_send, path)
        finally:
            self.metrics.requests.labels(route, str(status_seen[0] if status_seen else 499)).inc()

    async def _guarded_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake gets the same host, origin and API-key checks (a browser page can open
        a WebSocket to any port without CORS): refused, it is answered with the error as an HTTP response
        where the server supports that (ASGI's websocket.http.response), else closed with code 1008."""
        refusal = self._refusal(scope, dict(scope.get("headers") or []), scope.get("path", ""))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(refusal.body()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": refusal.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers, path)
        if refusal is not None:
            await _send_error(send, refusal)
            return
        too_large = APIError(
            413,
            f"the request body is over the {self.limit} byte limit; send a shorter prompt",
            code="request_too_large",
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(send, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, too_large)
