"""A model replica of ``phi3 serve --ray``: one served model, loaded on this replica's own node.

Each replica is the single-process server's engine half, unchanged: a
:class:`~phi3.server.serving.Server` whose pool serves this one model (so ``--max-loaded``,
``--idle-unload``, suffix variants and the per-model slots and ``--max-queue`` behave exactly as
under uvicorn), without the HTTP half, which runs in the ingress
(:mod:`phi3.server.ray_ingress`). The model is loaded in the constructor, on the node Ray placed
the replica on, with the server's defaults: ``-b auto`` therefore picks that node's best device,
and a mixed NPU/GPU/CPU cluster runs each replica on what its node has. The defaults carry
``--adapter``'s adapters, so the replica loads its model with them, and its server turns a
``MODEL:NAME`` field into a generation with adapter NAME (:mod:`phi3.server.adapters`).

:meth:`ModelReplica.generate` streams :data:`~phi3.server.ray_events.Event` tuples; errors are
sent as data (never raised), so the ingress answers exactly what the in-process server would.
Every second (and soon after each request) the replica reports its loaded models and metrics to
the registry (:mod:`phi3.server.ray_registry`), which is how ``/v1/models`` and ``/metrics`` show
every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from phi3.errors import Phi3Error
from phi3.model import Model, TextStream
from phi3.server.errors import APIError, from_phi3, unexpected
from phi3.server.ray_events import ErrorData, Event, Snapshot
from phi3.server.serving import Server, ServerSettings, loaded_card

log = logging.getLogger("phi3.server")

REPORT_PERIOD_S = 1.0
"""How often a replica reports to the registry when nothing happens (a heartbeat)."""
REPORT_SOON_S = 0.1
"""How soon after a request starts or ends it reports (its metrics changed)."""
FORGET_TIMEOUT_S = 1.0


class ModelReplica:
    """The Ray Serve deployment class of one served model (see the module docstring)."""

    # Ray Serve awaits an async constructor: the replica is not routed to before its model loaded
    async def __init__(  # type: ignore[misc]
        self, name: str, settings: ServerSettings, registry: DeploymentHandle[Any]
    ) -> None:
        context = serve.get_replica_context()
        self.name = name
        self.replica = f"{context.deployment}#{context.replica_tag}"
        self.node = ray.get_runtime_context().get_node_id()
        self.registry = registry
        self.server = Server(dataclasses.replace(settings, models=(name,)))
        self.server.pool.start()
        # the pool's own load path: one worker thread, logged with backend, device and time taken
        entry = await self.server.pool.get(name)
        self.server.pool.release(entry)
        log.info(
            "replica %s on node %s (%s, pid %d) serves %s",
            self.replica,
            self.node,
            socket.gethostname(),
            os.getpid(),
            name,
        )
        self._changed = asyncio.Event()
        self._reporter = asyncio.create_task(self._report_forever())

    async def generate(
        self, field: str, open_stream: Callable[[Model], TextStream], check: Callable[[Model], None] | None = None
    ) -> AsyncIterator[Event]:
        """One generation: ``started`` once it holds a slot, its pieces, then ``done`` (or ``error``).

        Closing this stream (the client went away, the ingress cancels it) cancels the generation:
        its slot goes to the next request within a token or two, as in the in-process server.
        """
        try:
            generation = await self.server.start_generation(field, open_stream, None, check)
        except Exception as exc:
            yield ("error", self._error(exc))
            return
        self._changed.set()
        try:
            yield ("started", self.replica)
            async for piece in generation.pieces():
                yield ("piece", piece)
            yield ("done", generation.result)
        except Exception as exc:
            yield ("error", self._error(exc))
        finally:
            generation.cancel()
            self._changed.set()

    def snapshot(self) -> Snapshot:
        """What this replica tells the registry: where it runs, what it has loaded, its metrics."""
        return Snapshot(
            replica=self.replica,
            model=self.name,
            node=self.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            cards=[loaded_card(entry).model_dump() for entry in self.server.pool.entries()],
            metrics=list(self.server.metrics.registry.collect()),
        )

    def _error(self, exc: BaseException) -> ErrorData:
        if isinstance(exc, APIError):
            error = exc
        elif isinstance(exc, Phi3Error):
            error = from_phi3(exc)
        else:
            log.error("generation failed on replica %s", self.replica, exc_info=exc)
            error = unexpected(exc)
        return ErrorData.of(error, self.replica)

    async def _report_forever(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REPORT_PERIOD_S)
                await asyncio.sleep(REPORT_SOON_S)  # a finished generation updates its metrics just after
            self._changed.clear()
            try:
                await self.registry.report.remote(self.snapshot())
            except Exception as exc:  # the registry restarts with the app: report again next period
                log.debug("replica %s could not report to the registry: %s", self.replica, exc)

    async def __del__(self) -> None:
        # Serve also calls this on a replica whose constructor failed (its model or an adapter did
        # not load): it then has a server but no reporter, and never reported
        reporter: asyncio.Task[None] | None = getattr(self, "_reporter", None)
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(Exception):  # the registry may be stopping too (a whole app shutting down)
                await asyncio.wait_for(self.registry.forget.remote(self.replica), FORGET_TIMEOUT_S)
        server: Server | None = getattr(self, "server", None)
        if server is not None:
            await server.shutdown()
