"""uvicorn's server, with phi3's part in a graceful shutdown."""

from __future__ import annotations

import socket

import uvicorn

from phi3.server.serving import Server


class CancellingServer(uvicorn.Server):
    """Cancels phi3's in-flight generations as shutdown begins (Ctrl-C, SIGTERM).

    uvicorn first waits up to ``timeout_graceful_shutdown`` for open responses, and only then runs the
    app's lifespan shutdown; a long stream would be cut without a word when that time runs out. Cancelled
    at once instead, each stream ends with an error event (and no ``[DONE]``) within a token or two, and
    each non-streamed request with a 503, inside the grace period.
    """

    def __init__(self, config: uvicorn.Config, phi3_server: Server) -> None:
        super().__init__(config)
        self.phi3_server = phi3_server

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.phi3_server.cancel_running()
        await super().shutdown(sockets)
        # uvicorn 0.54 re-raises the signal it handled once it is done (for embedders); for the
        # phi3 serve command a graceful stop is the normal end: exit 0 after SIGTERM as after Ctrl-C
        # (test_soak_short.py checks the exit status)
        self._captured_signals.clear()
