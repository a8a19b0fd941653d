"""The ingress half of ``phi3 serve --ray``: the same FastAPI app, generating on model replicas.

:class:`RayServer` is the app's :class:`~phi3.server.serving.Server` with its generations sent to the
served model's Ray Serve deployment instead of an in-process pool, so every route, the API key and
body guard, the SSE framing, error shapes and ``Retry-After`` are the single-process server's own
code. What differs is only where the model runs:

- a generation starts once a replica holds a slot for it (its ``started`` event), so a full queue
  (429), an unknown variant or a failed load is a proper HTTP error, as under uvicorn; Ray Serve's
  own router queue is bounded too (``max_queued_requests``) and its ``BackPressureError`` is the
  same 429;
- a replica that dies before the answer started is retried on another replica (bounded); one that
  dies mid-stream ends that stream with an OpenAI error event (``code: replica_lost``), and the
  next requests go to the live replicas while Ray Serve restarts it;
- the replica that answered is in the ``x-phi3-replica`` response header (:class:`ReplicaHeader`);
- ``MODEL:NAME`` (``--adapter NAME=PATH``) goes to MODEL's deployment, whose replicas loaded MODEL
  with every adapter; ``/v1/models`` lists the adapters with their ``parent`` as without Ray;
- ``/v1/models``, ``/health`` and ``/metrics`` read every replica's last report from the registry
  (:mod:`phi3.server.ray_registry`): cards list their replicas (node, host, pid, device), and
  every per-model metric carries a ``replica`` label (HTTP request counts are the ingress's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from phi3.model import Model, TextStream
from phi3.server import schemas
from phi3.server.adapters import adapter_ids, split_adapter
from phi3.server.errors import APIError, unexpected
from phi3.server.guard import ASGIApp, Message, Receive, Scope, Send
from phi3.server.ray_events import ErrorData, Snapshot
from phi3.server.serving import DISCONNECT_POLL_S, RETRY_AFTER_S, Server, ServerSettings
from phi3.server.streaming import Generation

log = logging.getLogger("phi3.server")

REPLICA_HEADER = "x-phi3-replica"
OPEN_ATTEMPTS = 3
"""Replicas tried for one request when the chosen one is gone before it started answering."""
RETRY_PAUSE_S = 0.5
REGISTRY_TIMEOUT_S = 5.0
INGRESS_FAMILIES = frozenset({"phi3_requests", "phi3_abandoned_requests"})
"""Metric families the ingress itself counts (HTTP requests, clients that left while queued);
every other family comes from the replicas."""

_answered_by: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("phi3_replica", default=None)


class _ReplicaLost(Exception):
    pass


class RemoteGeneration(Generation):
    """A generation running on a model replica, read through a Ray Serve streaming response.

    It has :class:`~phi3.server.streaming.Generation`'s interface (``pieces()``, ``result``,
    ``cancel()``), which is all the routes use; there is no local worker thread to start.
    """

    def __init__(
        self, response: DeploymentResponseGenerator[Any], model: str, replica: str, on_end: Callable[[], None]
    ):
        self._response = response
        self._model = model
        self._on_end = on_end
        self._finished = False
        self.replica = replica
        self.result = None
        self.error = None
        self.cancelled = False
        self.new_tokens = 0

    def start(self) -> None:
        """Nothing to start: the replica began decoding before this object existed."""

    def cancel(self) -> None:
        """Cancel the replica's generation (its slot goes to the next request); no-op once finished."""
        if not self._finished:
            self._finished = True
            self.cancelled = True
            self._response.cancel()  # type: ignore[no-untyped-call]
            self._on_end()

    async def pieces(self) -> AsyncIterator[str]:
        try:
            async for kind, value in self._response:
                if kind == "piece":
                    yield value
                elif kind == "done":
                    self.result = value
                    self.new_tokens = value.new_tokens
                    return
                elif kind == "error":
                    assert isinstance(value, ErrorData)
                    raise value.error()
        except (RayError, RayServeException) as exc:
            if self._finished:  # we cancelled it ourselves
                return
            raise APIError(
                503,
                f"replica {self.replica} of model {self._model!r} stopped mid-answer ({type(exc).__name__}); "
                "retry the request: the other replicas serve it while Ray Serve restarts this one",
                type="server_error",
                code="replica_lost",
            ) from exc
        finally:
            if not self._finished:
                self._finished = True
                self._on_end()


class RayServer(Server):
    """The app's server state in the ingress replica (see the module docstring)."""

    def __init__(
        self, settings: ServerSettings, models: Mapping[str, DeploymentHandle[Any]], registry: DeploymentHandle[Any]
    ) -> None:
        super().__init__(settings)
        self.models = dict(models)
        self.registry = registry

    async def start_generation(
        self,
        field: str,
        open_stream: Callable[[Model], TextStream],
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        check: Callable[[Model], None] | None = None,
    ) -> Generation:
        # MODEL:NAME runs on MODEL's deployment (400 for an unknown NAME); the replica's own server
        # splits the field again and hands NAME to the generation (phi3.server.adapters)
        base_field, _ = split_adapter(field, self.settings.defaults)
        spec = self.pool.resolve(base_field)  # 404 for a model this app does not serve
        handle = self.models[spec.model]
        lost: Exception | None = None
        for attempt in range(OPEN_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_PAUSE_S)
            try:
                generation = await self._open(handle, spec.model, field, open_stream, disconnected, check)
            except _ReplicaLost as exc:
                lost = exc
                log.warning("a replica of %s was lost before answering (%s); trying another", spec.model, exc)
                continue
            self.running.add(generation)
            return generation
        raise APIError(
            503,
            f"no replica of model {spec.model!r} could take the request ({lost}); "
            "Ray Serve is restarting them: retry shortly",
            type="server_error",
            code="replica_lost",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    async def _open(
        self,
        handle: DeploymentHandle[Any],
        model: str,
        field: str,
        open_stream: Callable[[Model], TextStream],
        disconnected: Callable[[], Awaitable[bool]] | None,
        check: Callable[[Model], None] | None,
    ) -> RemoteGeneration:
        # open_stream and check are closures over the parsed request: Ray pickles them (cloudpickle)
        response = cast(
            "DeploymentResponseGenerator[Any]",
            handle.options(stream=True).generate.remote(field, open_stream, check),
        )
        try:
            kind, value = await self._first_event(response, field, disconnected)
        except BackPressureError:
            raise APIError(
                429,
                f"every replica of model {model!r} is busy and Ray Serve's queue for it is full "
                f"(--max-queue {self.settings.max_queue}); retry later",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        except (RayError, RayServeException) as exc:
            raise _ReplicaLost(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc
        except StopAsyncIteration:
            raise unexpected(RuntimeError(f"a replica of {model!r} ended a generation before starting it")) from None
        answered = value.replica if isinstance(value, ErrorData) else str(value)
        holder = _answered_by.get()
        if holder is not None:
            holder.append(answered)
        if kind == "error":
            assert isinstance(value, ErrorData)
            raise value.error()
        generation: RemoteGeneration | None = None

        def ended() -> None:
            if generation is not None:
                self.running.discard(generation)

        generation = RemoteGeneration(response, model, answered, ended)
        return generation

    async def _first_event(
        self,
        response: DeploymentResponseGenerator[Any],
        field: str,
        disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> Any:
        """The replica's first event; while the request waits for a slot, a client that leaves gives
        up its place at once (499, ``phi3_abandoned_requests_total``), as in the in-process server."""
        first = asyncio.ensure_future(response.__anext__())
        while True:
            done, _ = await asyncio.wait({first}, timeout=None if disconnected is None else DISCONNECT_POLL_S)
            if done:
                return first.result()
            assert disconnected is not None
            if await disconnected():
                first.cancel()
                response.cancel()  # type: ignore[no-untyped-call]
                with contextlib.suppress(BaseException):
                    await first
                self.metrics.abandoned.labels(field).inc()
                raise APIError(499, "the client closed the connection while waiting in the queue", code="cancelled")

    async def _snapshots(self) -> list[Snapshot]:
        try:
            snapshots: list[Snapshot] = await asyncio.wait_for(self.registry.snapshots.remote(), REGISTRY_TIMEOUT_S)
        except Exception as exc:  # the registry restarting: report no replicas rather than fail
            log.warning("the replica registry did not answer: %s", exc)
            return []
        return snapshots

    async def model_list(self) -> schemas.ModelList:
        cards = {name: schemas.ModelCard(id=name, created=0, replicas=[]) for name in self.pool.served}
        for snapshot in await self._snapshots():
            serves_default = False
            for loaded in snapshot.cards:
                card = cards.setdefault(loaded["id"], schemas.ModelCard(id=loaded["id"], created=0, replicas=[]))
                if not card.loaded:
                    card = card.model_copy(update={**loaded, "replicas": card.replicas})
                    cards[loaded["id"]] = card
                assert card.replicas is not None
                card.replicas.append(_replica_card(snapshot, loaded))
                serves_default = serves_default or loaded["id"] == snapshot.model
            served = cards.get(snapshot.model)
            if not serves_default and served is not None and served.replicas is not None:
                served.replicas.append(_replica_card(snapshot, None))
        for adapter_id, parent in adapter_ids(self.settings.defaults):
            cards[adapter_id] = schemas.ModelCard(id=adapter_id, created=0, parent=parent)
        return schemas.ModelList(data=list(cards.values()))

    async def loaded_cards(self) -> list[schemas.ModelCard]:
        return [card for card in (await self.model_list()).data if card.loaded]

    async def render_metrics(self) -> bytes:
        return merged_metrics(self.metrics.registry.collect(), await self._snapshots())


def _replica_card(snapshot: Snapshot, loaded: Mapping[str, Any] | None) -> schemas.ReplicaCard:
    details = {key: loaded.get(key) for key in ("backend", "engine", "device", "precision")} if loaded else {}
    return schemas.ReplicaCard(
        replica=snapshot.replica,
        node=snapshot.node,
        host=snapshot.host,
        pid=snapshot.pid,
        loaded=loaded is not None,
        max_concurrent_generations=loaded.get("max_concurrent_generations") if loaded else None,
        **details,
    )


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merged_metrics(local: Iterable[Metric], snapshots: Iterable[Snapshot]) -> bytes:
    """One Prometheus page: the ingress's request counts, and each replica's series with its
    ``replica`` label (so a sum over ``replica`` is the model's total, as one server reports it)."""
    families: dict[str, Metric] = {}

    def add(metric: Metric, labels: dict[str, str] | None) -> None:
        target = families.get(metric.name)
        if target is None:
            target = families[metric.name] = Metric(metric.name, metric.documentation, metric.type, metric.unit)
        if labels is not None:
            target.samples.extend(sample._replace(labels={**sample.labels, **labels}) for sample in metric.samples)

    for metric in local:
        add(metric, {} if metric.name in INGRESS_FAMILIES else None)
    for snapshot in snapshots:
        for metric in snapshot.metrics:
            if metric.name not in INGRESS_FAMILIES:
                add(metric, {"replica": snapshot.replica})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class ReplicaHeader:
    """ASGI middleware: the ``x-phi3-replica`` header names the model replica that answered.

    The route learns the replica only once a generation starts (:meth:`RayServer._open`), after
    this middleware passed the request on, so it leaves a holder in a context variable that the
    route fills, and adds the header when the response starts.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holder: list[str] = []
        token = _answered_by.set(holder)

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                headers = [*message.get("headers", []), (REPLICA_HEADER.encode(), holder[-1].encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            _answered_by.reset(token)
