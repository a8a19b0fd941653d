"""The guard in front of every route: the API key on ``/v1`` routes, then the body size limit.

An ASGI middleware rather than a FastAPI dependency, so it runs before anything reads the body: a
request without the key gets 401 even when its body is malformed, and an oversized body is refused
(413) without being buffered. It also counts every answer by route and status for ``/metrics``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from phi3.server.errors import APIError
from phi3.server.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/health", "/metrics")
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


class Guard:
    """ASGI middleware: API key on ``/v1`` routes, then the body size limit, before any parsing.

    It runs before FastAPI reads the body, so a request without the key gets 401 even when its body
    is malformed, and an oversized body is refused (413) without being buffered.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        if self.key is not None and path.startswith("/v1") and scope.get("method") != "OPTIONS":
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _send_error(
                    send,
                    APIError(
                        401,
                        "missing or wrong API key; send the header 'Authorization: Bearer KEY' "
                        "with the key the server was started with",
                        code="invalid_api_key",
                    ),
                )
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
