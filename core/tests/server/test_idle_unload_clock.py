"""``--idle-unload`` unloads a model only once it has been idle that long, by the pool's clock.

The pool's clock (``phi3.server.pool.time``) is replaced by one the test moves by hand, so "not before
the limit" and "after the limit" are events, not elapsed-time bounds: the model stays loaded across
several idle checks just short of the limit and goes at the first check past it. The model is real
(the tiny checkpoint on the reference backend).
"""

from __future__ import annotations

import asyncio
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs phi3-core[serve]")

from phi3.server import pool as pool_module
from phi3.server.metrics import Metrics
from phi3.server.model_spec import Defaults

LIMIT = 0.2
"""Idle limit in the fake clock's seconds; the pool checks every LIMIT / 4 real seconds (0.05 s)."""


class Clock:
    """A monotonic clock that moves only when told; each read is an event the test can wait for."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0
        self._read = asyncio.Event()

    def monotonic(self) -> float:
        self.reads += 1
        self._read.set()
        return self.now

    async def reads_more(self, count: int) -> None:
        """Until the clock has been read ``count`` more times (the idle loop reads it once per check)."""
        target = self.reads + count
        while self.reads < target:
            self._read.clear()
            await asyncio.wait_for(self._read.wait(), timeout=60)  # a bound on a hang, not an assertion


def test_a_model_is_unloaded_after_the_idle_limit_and_not_before(
    tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = str(tiny_phi3)

    async def scenario() -> None:
        clock = Clock(1000.0)
        monkeypatch.setattr(
            pool_module,
            "time",
            types.SimpleNamespace(monotonic=clock.monotonic, perf_counter=time.perf_counter, time=time.time),
        )
        metrics = Metrics()

        def idle_unloads() -> float:
            labels = {"model": name, "reason": "idle"}
            return metrics.registry.get_sample_value("phi3_model_unloads_total", labels) or 0.0

        pool = pool_module.ModelPool(
            served=[name],
            defaults=Defaults(backend="reference", device="cpu", precision="fp32"),
            metrics=metrics,
            idle_unload=LIMIT,
        )
        pool.start()
        try:
            async with pool.lease(name) as entry:
                assert entry.model.backend == "reference"
                clock.now += 10 * LIMIT  # in use: never idle, however long the request takes
                await clock.reads_more(3)
                assert [e.name for e in pool.entries()] == [name]
            # released at 1000 + 10 LIMIT: idle from here
            clock.now += 0.9 * LIMIT
            await clock.reads_more(3)
            assert [e.name for e in pool.entries()] == [name], "unloaded before the idle limit"
            assert idle_unloads() == 0
            clock.now += 0.2 * LIMIT
            await clock.reads_more(2)  # one check may have read the clock just before it moved
            assert pool.entries() == [], "not unloaded one check after the idle limit"
            assert idle_unloads() == 1
        finally:
            await pool.shutdown()

    asyncio.run(scenario())
