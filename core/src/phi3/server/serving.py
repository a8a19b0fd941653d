"""The server's engine room: the model pool, the generations running now, and their endings.

Routes (:mod:`phi3.server.app`) call :meth:`Server.start_generation` with a function that opens a
:class:`phi3.TextStream` on the loaded model; this module finds or loads the model, checks the
request against it, queues the request for a generation slot, runs the decode in a thread
(:class:`~phi3.server.streaming.Generation`) and hands the pieces back. A client that leaves --
while queued, before the first token, or mid-answer -- cancels its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from phi3.catalogue import CATALOGUE, SMOKE_ALIAS
from phi3.errors import Phi3Error
from phi3.model import Model, TextStream
from phi3.server import schemas
from phi3.server.adapters import AdaptedModel, adapter_ids, split_adapter
from phi3.server.errors import APIError, from_phi3, unexpected
from phi3.server.metrics import Metrics
from phi3.server.model_spec import Defaults
from phi3.server.pool import Entry, Loader, ModelPool
from phi3.server.slots import QueueFull, Slots
from phi3.server.streaming import Generation

CUT_SHORT = APIError(
    503,
    "the answer was cut short: the server is shutting down or the generation was cancelled; retry the request",
    type="server_error",
    code="generation_cancelled",
)
SHUTTING_DOWN = APIError(
    503,
    "the server is shutting down; retry the request against a running server",
    type="server_error",
    code="server_shutting_down",
)
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
RETRY_AFTER_S = 1
DISCONNECT_POLL_S = 0.25
"""How often a request checks that its client is still connected (queued, or waiting for its answer)."""
SHUTDOWN_GRACE_S = 10.0
"""On shutdown, in-flight generations are cancelled (their streams end with an error frame) and
the server waits up to this long for their decoders to stop before unloading the models."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``phi3 serve`` configures, apart from host and port."""

    models: tuple[str, ...] = ()
    defaults: Defaults = dataclasses.field(default_factory=Defaults)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    cors_headers: tuple[str, ...] = ("*",)
    """Request headers a browser may send cross-origin (with ``cors_origins``): any, by default, since
    the openai JS SDK sends its own ``x-stainless-*`` set and the origin list is what restricts."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names requests may address this server by, besides IP addresses and localhost (the bound
    host is added by ``phi3 serve``; ``*`` allows any)."""
    allow_any_model: bool = False
    """Without MODEL arguments, let clients name any model id (local paths, hub ids), not only the
    catalogue's aliases and models already in PHI3_HOME."""
    max_loaded: int = 1
    idle_unload: float | None = None
    max_queue: int = 16
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ui: bool = True
    """Serve the chat page at ``/`` (:mod:`phi3.server.ui_routes`); ``phi3 serve --no-ui`` turns it off."""


class Server:
    """State shared by the routes: the pool, the metrics and the generations running now."""

    def __init__(self, settings: ServerSettings, loader: Loader | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.pool = ModelPool(
            served=settings.models,
            allow_any_model=settings.allow_any_model,
            defaults=settings.defaults,
            metrics=self.metrics,
            max_loaded=settings.max_loaded,
            idle_unload=settings.idle_unload,
            max_queue=settings.max_queue,
            loader=loader,
        )
        self.running: set[Generation] = set()
        self.stopping = False
        """Shutdown has begun: requests still queued or arriving get 503, none starts decoding."""

    async def start_generation(
        self,
        field: str,
        open_stream: Callable[[Model], TextStream],
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        check: Callable[[Model], None] | None = None,
    ) -> Generation:
        """Load (or find) the model, ``check`` the request against it (e.g. a ``response_format``
        its backend cannot enforce: a 400 before the request takes a queue place), wait for a slot
        in its queue, and start decoding in a thread.

        While the request waits in the queue, ``disconnected`` is polled: a client that leaves gives
        up its place at once (499) instead of being noticed only when its turn comes. The slot and
        the model lease are released when the worker thread has closed the stream, whatever
        happens to the HTTP request meanwhile.
        """
        if self.stopping:
            raise SHUTTING_DOWN
        base_field, adapter = split_adapter(field, self.settings.defaults)
        entry = await self.pool.get(base_field)
        name = entry.name  # the model field that loaded it: one metrics series per loaded variant
        try:
            if check is not None:
                check(entry.model if adapter is None else AdaptedModel(entry.model, adapter))  # type: ignore[arg-type]
            self.metrics.queue_depth.labels(name).set(entry.slots.waiting + 1)
            try:
                waited = await _wait_for_slot(entry.slots, disconnected, lambda: self.stopping)
                if waited == "left":
                    self.metrics.abandoned.labels(name).inc()
                    raise APIError(499, "the client closed the connection while waiting in the queue", code="cancelled")
                if waited == "stopping":
                    raise SHUTTING_DOWN
            except QueueFull:
                raise APIError(
                    429,
                    f"model {field!r} has {entry.slots.active} generation(s) running and {entry.slots.waiting} "
                    f"waiting (--max-queue {entry.slots.max_queue}); retry later",
                    type="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
            finally:
                self.metrics.queue_depth.labels(name).set(entry.slots.waiting)
        except BaseException:
            self.pool.release(entry)
            raise
        self.metrics.active.labels(name).inc()

        def finished(generation: Generation) -> None:
            self.running.discard(generation)
            self.metrics.active.labels(name).dec()
            self.metrics.generated_tokens.labels(name).inc(generation.new_tokens)
            result = generation.result
            if result is not None:
                self.metrics.prompt_tokens.labels(name).inc(result.prompt_tokens)
                if result.new_tokens:
                    self.metrics.time_to_first_token.labels(name).observe(result.time_to_first_token_s)
                if result.decode_tokens_per_s > 0:
                    self.metrics.time_per_token.labels(name).observe(1.0 / result.decode_tokens_per_s)
            elif generation.cancelled:
                self.metrics.cancelled.labels(name).inc()
            entry.slots.release()
            self.metrics.queue_depth.labels(name).set(entry.slots.waiting)
            self.pool.release(entry)

        model: Model = entry.model if adapter is None else AdaptedModel(entry.model, adapter)  # type: ignore[assignment]
        generation = Generation(lambda: open_stream(model), finished)
        self.running.add(generation)
        generation.start()
        return generation

    async def loaded_cards(self) -> list[schemas.ModelCard]:
        """What ``/health`` lists: the loaded models (the Ray runner lists them per replica)."""
        return [loaded_card(e) for e in self.pool.entries() if self.pool.listable(e.spec.model)]

    async def model_list(self) -> schemas.ModelList:
        """What ``/v1/models`` lists: every model the server can serve before any load (the served
        ids; without MODEL arguments, the catalogue's aliases), then every loaded variant."""
        servable = self.pool.served or [SMOKE_ALIAS, *CATALOGUE]
        cards: dict[str, schemas.ModelCard] = {name: schemas.ModelCard(id=name, created=0) for name in servable}
        for entry in self.pool.entries():
            if not self.pool.listable(entry.spec.model):
                continue
            card = loaded_card(entry)
            if entry.spec.model in cards and entry.spec == self.pool.resolve(entry.spec.model):
                card.id = entry.spec.model
            cards[card.id] = card
        for adapter_id, parent in adapter_ids(self.settings.defaults):
            cards[adapter_id] = schemas.ModelCard(id=adapter_id, created=0, parent=parent)
        return schemas.ModelList(data=list(cards.values()))

    async def model_card(self, model_id: str) -> schemas.ModelCard:
        """``/v1/models/{id}``: a listed model's card, else 404 in OpenAI's shape."""
        for card in (await self.model_list()).data:
            if card.id == model_id:
                return card
        raise APIError(
            404,
            f"model {model_id!r} is not served here; GET /v1/models lists them",
            param="model",
            code="model_not_found",
        )

    async def render_metrics(self) -> bytes:
        """The Prometheus text of ``/metrics``."""
        return self.metrics.render()

    def cancel_running(self) -> None:
        """Shutdown begins: cancel every generation in flight (streams end with an error event) and
        turn away every request still queued or arriving (503), so none starts decoding."""
        self.stopping = True
        for generation in list(self.running):
            generation.cancel()

    async def shutdown(self) -> None:
        self.cancel_running()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.pool.shutdown()


async def _wait_for_slot(
    slots: Slots, disconnected: Callable[[], Awaitable[bool]] | None, stopping: Callable[[], bool]
) -> str:
    """Take a slot: ``"acquired"``; or ``"left"`` / ``"stopping"`` (the queue place given up, a slot
    that came meanwhile handed on) if the client disconnects or the server begins to shut down
    first. Checked every DISCONNECT_POLL_S, only while the request is waiting."""
    task = asyncio.ensure_future(slots.acquire())
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            task.result()  # QueueFull and other errors propagate
            if not stopping():
                return "acquired"
            slots.release()
            return "stopping"
        elif stopping():
            give_up = "stopping"
        elif disconnected is not None and await disconnected():
            give_up = "left"
        else:
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not task.cancelled() and task.exception() is None:
            if give_up == "left":  # the slot came just as the client left: the caller's normal path releases it
                return "acquired"
            slots.release()
        return give_up


async def _first(pieces: AsyncIterator[str]) -> tuple[str | None, AsyncIterator[str]]:
    """The first piece (None when the stream is empty): errors before any output become HTTP errors."""
    try:
        return await pieces.__anext__(), pieces
    except StopAsyncIteration:
        return None, pieces


def _raise_generation_error(exc: BaseException) -> None:
    if isinstance(exc, APIError):
        raise exc
    if isinstance(exc, Phi3Error):
        raise from_phi3(exc) from exc
    raise unexpected(exc) from exc


def loaded_card(entry: Entry) -> schemas.ModelCard:
    model = entry.model
    return schemas.ModelCard(
        id=entry.name,
        created=int(entry.loaded_at),
        loaded=True,
        backend=model.backend,
        engine=model.engine,
        device=model.device,
        precision=model.precision,
        max_concurrent_generations=model.max_concurrent_generations,
    )


@contextlib.asynccontextmanager
async def cancelled_if_client_leaves(generation: Generation, http: Request) -> AsyncIterator[None]:
    """While the body runs, a watcher polls the connection and cancels ``generation`` when the
    client is gone, so the model is not kept busy for nobody (a timeout, Ctrl-C, a closed tab)."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await http.is_disconnected():
                generation.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def collect(generation: Generation, http: Request) -> str:
    """The whole answer; a generation error becomes the matching HTTP error, a client that leaves
    cancels the generation."""
    parts: list[str] = []
    try:
        async with cancelled_if_client_leaves(generation, http):
            async for piece in generation.pieces():
                parts.append(piece)
    except BaseException as exc:
        generation.cancel()
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        _raise_generation_error(exc)
    if generation.result is None:  # cancelled: the client left, or the server is stopping
        if await http.is_disconnected():
            raise APIError(499, "the client closed the connection before the answer was complete", code="cancelled")
        raise CUT_SHORT
    return "".join(parts)


async def opening(generation: Generation, http: Request) -> tuple[str | None, AsyncIterator[str]]:
    """Wait for the first piece before answering 200, so an early failure is a proper HTTP error; a
    client that leaves meanwhile (a long prompt, a slow first token) cancels the generation."""
    pieces = generation.pieces()
    try:
        async with cancelled_if_client_leaves(generation, http):
            return await _first(pieces)
    except BaseException as exc:
        generation.cancel()
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        _raise_generation_error(exc)
        raise  # unreachable: _raise_generation_error always raises
