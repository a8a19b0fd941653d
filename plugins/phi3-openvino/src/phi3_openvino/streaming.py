"""Turning a blocking, callback-driven ``generate()`` into the Chunk iterator phi3 wants.

Both engines' generate calls block until the end and report tokens through a callback
(openvino_genai's ``StreamerBase.write``, transformers' ``BaseStreamer.put``). phi3 wants a lazy
iterator it can stop at any time (stop strings, ``max_new_tokens``, a user pressing Ctrl-C). So
the call runs in a worker thread that pushes token ids into a queue, the iterator reads the queue,
and closing the iterator sets a flag the callback returns, which makes the engine stop decoding at
the next token; the iterator then waits for the thread so the pipeline is free for the next call.

Text is decoded incrementally (:class:`IncrementalDecoder`) from the token ids, so every chunk
carries both its ids and their text, and an unfinished multi-byte character (byte-fallback tokens
decode to U+FFFD until complete) is held back instead of being shown and retracted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from phi3.errors import Phi3Error
from phi3.integrations.detokenize import IncrementalDecoder
from phi3.types import Chunk

Push = Callable[[Sequence[int]], bool]
"""What a running generate call calls with new token ids; True means "stop now"."""


@dataclass
class _Failure:
    error: BaseException


_DONE = object()


def stream_chunks(
    run: Callable[[Push], None],
    decode: Callable[[Sequence[int]], str],
    *,
    prompt_tokens: int,
    max_new_tokens: int,
    busy: threading.Lock,
    translate: Callable[[BaseException], BaseException],
) -> Iterator[Chunk]:
    """Run ``run(push)`` in a thread and yield a Chunk per token batch it pushes.

    ``busy`` guards the native pipeline (not re-entrant); a second concurrent generation on the
    same session is refused instead of deadlocking. ``translate`` maps an engine exception to a
    phi3 error. At most ``max_new_tokens`` ids are ever yielded.
    """
    if not busy.acquire(blocking=False):
        raise Phi3Error("this model is already generating; finish or close the other stream first")
    events: queue.Queue[object] = queue.Queue()
    cancel = threading.Event()

    def push(ids: Sequence[int]) -> bool:
        events.put([int(i) for i in ids])
        return cancel.is_set()

    def worker() -> None:
        try:
            run(push)
        except BaseException as exc:  # handed to the consumer thread, which raises it
            events.put(_Failure(exc))
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=worker, name="phi3-openvino-generate", daemon=True)
    decoder = IncrementalDecoder(decode)
    sent = 0
    first = True
    try:
        thread.start()
        while True:
            event = events.get()
            if event is _DONE:
                break
            if isinstance(event, _Failure):
                raise translate(event.error) from event.error
            assert isinstance(event, list)
            ids = event[: max(0, max_new_tokens - sent)]
            if not ids:
                continue
            sent += len(ids)
            yield Chunk(decoder.push(ids), tuple(ids), prompt_tokens if first else None)
            first = False
        rest = decoder.flush()
        if rest or first:
            yield Chunk(rest, (), prompt_tokens if first else None)
    finally:
        cancel.set()
        thread.join()
        busy.release()


__all__ = ["IncrementalDecoder", "Push", "stream_chunks"]
