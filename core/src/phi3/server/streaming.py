"""Running a blocking :class:`phi3.TextStream` in a thread and reading it from the event loop.

Backends decode in native code that blocks; running that on the event loop would stall every other
client. So each generation gets a worker thread that iterates the stream and posts each piece to
an :class:`asyncio.Queue`. Cancelling (a client that went away) sets a flag the worker checks after
every piece: it then closes the stream, which closes the backend's iterator, so decoding stops
within a token or two. ``on_finished`` runs on the loop only once the worker has closed the stream,
so a generation slot is never handed on while the backend is still busy with the old request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from phi3.model import TextStream
from phi3.types import GenerationResult


class Generation:
    """One generation: ``start()``, then ``async for piece in gen.pieces()``, then ``gen.result``."""

    def __init__(
        self,
        open_stream: Callable[[], TextStream],
        on_finished: Callable[[Generation], None],
    ) -> None:
        self._open_stream = open_stream
        self._on_finished = on_finished
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cancel = threading.Event()
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.new_tokens = 0
        """Tokens the backend decoded, known once finished (also when cancelled)."""
        self._thread = threading.Thread(target=self._work, name="phi3-serve-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Ask the worker to stop at the next piece; safe to call from the loop at any time."""
        self._cancel.set()

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces as they decode; raises the generation's error; ends at the end or on cancel.

        Pieces that arrived while the reader was busy are joined into one, so a slow client gets
        fewer, larger chunks instead of falling ever further behind the decoder.
        """
        pending: tuple[str, Any] | None = None
        while True:
            kind, value = pending if pending is not None else await self._events.get()
            pending = None
            if kind == "piece":
                parts = [value]
                while not self._events.empty():
                    event = self._events.get_nowait()
                    if event[0] != "piece":
                        pending = event
                        break
                    parts.append(event[1])
                yield "".join(parts)
            elif kind == "error":
                raise value
            else:
                return

    def _post(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutting down): nobody is listening
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))

    def _work(self) -> None:
        stream: TextStream | None = None
        try:
            stream = self._open_stream()
            for piece in stream:
                self._post("piece", piece)
                if self._cancel.is_set():
                    break
            else:
                self.result = stream.result
            if self.result is None:
                self.cancelled = True
        except BaseException as exc:  # handed to the reader, which turns it into an HTTP error
            self.error = exc
            self._post("error", exc)
        finally:
            if stream is not None:
                stream.close()
                self.new_tokens = stream.new_tokens
            self._post("end", None)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_finished, self)
