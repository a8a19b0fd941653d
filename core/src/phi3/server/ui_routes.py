"""The chat page ``phi3 serve`` serves at ``/`` (``--no-ui`` turns it off).

Static, hand-written files shipped inside phi3-core (``phi3/server/ui/``): no CDN, no build step, no
network. The page is a client of this same server: it lists ``/v1/models`` and streams
``/v1/chat/completions`` (SSE), so it passes the same guard as any client (host and origin checks, the
API key it asks the user for). Nothing about a conversation is stored server-side: the page keeps them
in the browser's local storage.

The page never puts model text into HTML (it builds DOM nodes with ``textContent``); the
Content-Security-Policy sent with it allows only this server's own scripts and styles, as a second
line of defence.
"""

from __future__ import annotations

import logging
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

from phi3.server.errors import APIError

log = logging.getLogger("phi3.server")

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
"""Every file of the page, with its media type: nothing else under ``ui/`` is served."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes | None:
    try:
        return (resources.files("phi3.server") / "ui" / name).read_bytes()
    except OSError:
        return None


def install_ui_routes(app: FastAPI) -> None:
    """``GET /`` (the page) and ``GET /ui/{name}`` (its script, style sheet and icon)."""
    files = {name: _read(name) for name in FILES}
    missing = sorted(name for name, body in files.items() if body is None)
    if missing:
        log.warning("the chat page's files are missing (%s): / answers 404", ", ".join(missing))

    def serve(name: str) -> Response:
        body = files.get(name)
        if body is None:
            raise APIError(
                404,
                f"the chat page file {name!r} is not part of this phi3-core install; reinstall phi3-core "
                "or start phi3 serve with --no-ui",
                code="not_found",
            )
        return Response(body, media_type=FILES[name], headers=SECURITY_HEADERS)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return serve("index.html")

    @app.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in FILES or name == "index.html":
            raise APIError(404, f"no route GET /ui/{name}", code="not_found")
        return serve(name)


__all__ = ["install_ui_routes"]
