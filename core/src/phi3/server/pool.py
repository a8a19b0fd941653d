"""Which models are loaded: load on first use (once), share, unload least recently used and idle.

Each distinct :class:`~phi3.server.model_spec.ModelSpec` is one loaded :class:`phi3.Model` with its
own :class:`~phi3.server.slots.Slots`. Concurrent first requests for a spec await one load task.
Loads run one at a time in a worker thread (so the event loop keeps serving, and two big models
never quantize at once). A model is unloaded (``Model.close()``) only when no request holds it or
waits for it: beyond ``max_loaded`` the least recently used idle one goes, and any model idle for
``idle_unload`` seconds goes. Loads and unloads are logged with backend, device and time taken.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from phi3.errors import Phi3Error
from phi3.model import Model
from phi3.server.errors import APIError, from_phi3, unexpected
from phi3.server.metrics import Metrics
from phi3.server.model_spec import Defaults, ModelSpec, parse
from phi3.server.slots import Slots

log = logging.getLogger("phi3.server")

Loader = Callable[..., Model]


@dataclass
class Entry:
    """A loaded model and who is using it."""

    name: str
    spec: ModelSpec
    model: Model
    slots: Slots
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    loaded_at: float = field(default_factory=time.time)


def may_load(model_id: str) -> bool:
    """A catalogue alias, or a model id PHI3_HOME already holds an artifact of (a client may not
    make the server read an arbitrary folder or download an arbitrary hub repo)."""
    from phi3.cache import ArtifactCache
    from phi3.catalogue import SMOKE_ALIAS, lookup

    if model_id == SMOKE_ALIAS or lookup(model_id) is not None:
        return True
    cached = {artifact.manifest.get("source", {}).get("model_id") for artifact in ArtifactCache().artifacts()}
    return model_id in cached


def load_spec(spec: ModelSpec, loader: Loader | None = None) -> Model:
    """``phi3.load`` (or ``loader``) with the spec's model, backend, device, precision, engine, options."""
    if loader is None:
        import phi3

        loader = phi3.load
    options: dict[str, Any] = dict(spec.options)
    if spec.adapters:
        options["adapters"] = dict(spec.adapters)
    return loader(
        spec.model,
        backend=spec.backend,
        device=spec.device,
        precision=spec.precision,
        engine=spec.engine,
        **options,
    )


class ModelPool:
    def __init__(
        self,
        *,
        served: Sequence[str],
        defaults: Defaults,
        metrics: Metrics,
        allow_any_model: bool = False,
        max_loaded: int = 1,
        idle_unload: float | None = None,
        max_queue: int = 16,
        loader: Loader | None = None,
    ) -> None:
        self.served = list(dict.fromkeys(served))
        self.allow_any_model = allow_any_model
        self.defaults = defaults
        self.metrics = metrics
        self.max_loaded = max_loaded
        self.idle_unload = idle_unload
        self.max_queue = max_queue
        self._loader = loader
        self._loaded: collections.OrderedDict[ModelSpec, Entry] = collections.OrderedDict()
        self._loading: dict[ModelSpec, asyncio.Task[Entry]] = {}
        self._pins: collections.Counter[ModelSpec] = collections.Counter()
        self._load_lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._idle_task: asyncio.Task[None] | None = None

    # -- what is served --------------------------------------------------------------------------

    def resolve(self, field: str) -> ModelSpec:
        """The spec for a request's ``model``; 404 when this server does not serve it.

        With MODEL arguments, only those. Without, the catalogue's aliases and models already in
        PHI3_HOME (``--allow-any-model``: any id). The refusal is the same whether or not the id
        names something on this machine, and quotes the field as sent: nothing about the server's
        files reaches a client.
        """
        spec = parse(field, self.defaults)
        if self.served and spec.model not in self.served:
            raise APIError(
                404,
                f"model {field!r} is not served here; served: {', '.join(self.served)}",
                param="model",
                code="model_not_found",
            )
        if not self.served and not self.allow_any_model and not may_load(spec.model):
            raise APIError(
                404,
                f"model {field!r} is not served here: without MODEL arguments phi3 serve serves the catalogue's "
                "aliases (GET /v1/models) and models already in PHI3_HOME; start it as `phi3 serve MODEL`, or "
                "with --allow-any-model",
                param="model",
                code="model_not_found",
            )
        return spec

    def listable(self, model_id: str) -> bool:
        """Whether ``/v1/models`` may show this id: a path on this machine only when the operator
        named it as a MODEL argument."""
        return model_id in self.served or not os.path.exists(os.path.expanduser(model_id))

    def entries(self) -> list[Entry]:
        return list(self._loaded.values())

    # -- using a model ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, field: str) -> AsyncIterator[Entry]:
        """Hold the model ``field`` names (loading it if needed) so it is not unloaded meanwhile."""
        entry = await self.get(field)
        try:
            yield entry
        finally:
            self.release(entry)

    async def get(self, field: str) -> Entry:
        """The loaded entry, with one more user counted; pair it with :meth:`release`."""
        spec = self.resolve(field)
        for _ in range(5):  # another model's load may evict this one between our load and our turn
            entry = self._loaded.get(spec)
            if entry is None:
                task = self._loading.get(spec)
                if task is None:
                    task = asyncio.create_task(self._load(field, spec))
                    self._loading[spec] = task
                self._pins[spec] += 1
                try:
                    entry = await asyncio.shield(task)
                finally:
                    self._pins[spec] -= 1
            if self._loaded.get(spec) is entry:
                entry.users += 1
                entry.last_used = time.monotonic()
                self._loaded.move_to_end(spec)
                return entry
        raise APIError(
            503, f"model {field!r} keeps being unloaded by other loads; raise --max-loaded", type="server_error"
        )

    def release(self, entry: Entry) -> None:
        entry.users -= 1
        entry.last_used = time.monotonic()
        self._evict_excess()

    # -- loading and unloading -------------------------------------------------------------------

    async def _load(self, name: str, spec: ModelSpec) -> Entry:
        try:
            async with self._load_lock:
                started = time.perf_counter()
                log.info("loading %s (backend %s, device %s)", spec.label, spec.backend, spec.device)
                try:
                    model = await asyncio.to_thread(self._load_now, spec)
                except Phi3Error as exc:
                    self.metrics.loads.labels(name, "error").inc()
                    log.warning("loading %s failed: %s", spec.label, exc)
                    raise from_phi3(exc, param="model") from exc
                except Exception as exc:
                    self.metrics.loads.labels(name, "error").inc()
                    log.exception("loading %s failed", spec.label)
                    raise unexpected(exc) from exc
                entry = Entry(name, spec, model, Slots(model.max_concurrent_generations, self.max_queue))
                self._loaded[spec] = entry
                self.metrics.loads.labels(name, "ok").inc()
                self.metrics.loaded.set(len(self._loaded))
                log.info(
                    "loaded %s on %s/%s (%s, %s, %d concurrent) in %.2f s",
                    spec.label,
                    model.backend,
                    model.engine,
                    model.device,
                    model.precision,
                    model.max_concurrent_generations,
                    time.perf_counter() - started,
                )
                self._evict_excess()
                return entry
        finally:
            self._loading.pop(spec, None)

    def _load_now(self, spec: ModelSpec) -> Model:
        return load_spec(spec, self._loader)

    def adopt(self, name: str, model: Model) -> None:
        """Serve ``model`` (loaded before the server started, by ``--preload``) as ``name``."""
        spec = self.resolve(name)
        self._loaded[spec] = Entry(name, spec, model, Slots(model.max_concurrent_generations, self.max_queue))
        self.metrics.loads.labels(name, "ok").inc()
        self.metrics.loaded.set(len(self._loaded))
        self._evict_excess()

    def _idle(self, spec: ModelSpec, entry: Entry) -> bool:
        return entry.users == 0 and self._pins[spec] == 0 and not entry.slots.busy

    def _evict_excess(self) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next(((s, e) for s, e in self._loaded.items() if self._idle(s, e)), None)
            if victim is None:
                return  # every loaded model is busy: unload once one becomes idle
            self._unload(*victim, reason="lru")

    def _unload(self, spec: ModelSpec, entry: Entry, reason: str) -> None:
        del self._loaded[spec]
        self.metrics.loaded.set(len(self._loaded))
        self.metrics.unloads.labels(entry.name, reason).inc()
        task = asyncio.create_task(self._close(entry, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, entry: Entry, reason: str) -> None:
        started = time.perf_counter()
        model = entry.model
        try:
            await asyncio.to_thread(model.close)
        except Exception:
            log.exception("unloading %s failed", entry.spec.label)
            return
        why = {"lru": f"more than --max-loaded {self.max_loaded}", "idle": "idle", "shutdown": "shutdown"}[reason]
        log.info(
            "unloaded %s from %s/%s (%s) in %.2f s: %s",
            entry.spec.label,
            model.backend,
            model.engine,
            model.device,
            time.perf_counter() - started,
            why,
        )

    # -- background work -------------------------------------------------------------------------

    def start(self) -> None:
        if self.idle_unload is not None:
            self._idle_task = asyncio.create_task(self._unload_idle(self.idle_unload))

    async def _unload_idle(self, limit: float) -> None:
        period = min(max(limit / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - limit
            for spec, entry in list(self._loaded.items()):
                if self._idle(spec, entry) and entry.last_used <= cutoff:
                    self._unload(spec, entry, reason="idle")

    async def shutdown(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task
        for spec, entry in list(self._loaded.items()):
            self._unload(spec, entry, reason="shutdown")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
