"""Generation slots for one loaded model, and the bounded FIFO queue in front of them.

A model runs ``Model.max_concurrent_generations`` streams at once (its backend's promise, 1 unless
the backend batches). Further requests wait in arrival order; when ``max_queue`` are already
waiting, the next one is refused at once (HTTP 429) rather than piling up unbounded latency.
Everything here runs on the event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import collections


class QueueFull(Exception):
    """Every slot is busy and the queue is full."""


class Slots:
    def __init__(self, capacity: int, max_queue: int) -> None:
        self.capacity = capacity
        self.max_queue = max_queue
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def busy(self) -> bool:
        return self.active > 0 or self.waiting > 0

    async def acquire(self) -> None:
        """Take a slot, waiting in FIFO order; QueueFull when ``max_queue`` already wait."""
        if self.active < self.capacity and not self.waiting:
            self.active += 1
            return
        if self.waiting >= self.max_queue:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: active stays counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled: pass it on
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        """Give the slot to the first live waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1
