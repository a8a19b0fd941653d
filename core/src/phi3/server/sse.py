"""Server-sent events: one streamed answer as OpenAI's ``data:`` frames.

A stream that ends normally ends with ``data: [DONE]``. One that does not — the backend failed after
the first token, the server is shutting down, the generation was cancelled — ends with an OpenAI
error frame and *no* ``[DONE]``, so a client can never take a cut answer for a complete one (the
status line, 200, is gone by then).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from phi3.errors import Phi3Error
from phi3.server import schemas
from phi3.server.errors import APIError, from_phi3, unexpected
from phi3.server.mapping import tool_calls
from phi3.server.serving import CUT_SHORT
from phi3.server.streaming import Generation
from phi3.types import GenerationResult

log = logging.getLogger("phi3.server")

DONE = b"data: [DONE]\n\n"


def frame(payload: BaseModel | dict[str, Any]) -> bytes:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def content_frame(head: dict[str, Any], before: str, after: str) -> Callable[[str], bytes]:
    """A fast serializer for the chunks that carry text (one per decoded piece).

    Equal to the pydantic chunk models' JSON, but built from a pre-rendered frame, so the server's
    per-token cost stays far below a token's decode time.
    """
    prefix_json = json.dumps(head)[:-1]
    prefix = f'data: {prefix_json},"choices":[{{"index":0,{before}'.encode()
    suffix = f'{after},"finish_reason":null,"logprobs":null}}]}}\n\n'.encode()

    def render(piece: str) -> bytes:
        return prefix + json.dumps(piece).encode() + suffix

    return render


def tool_call_deltas(result: GenerationResult) -> list[schemas.Delta]:
    """The calls as OpenAI streams them: per call, its index, id, type and name (empty
    arguments), then its arguments; clients join the pieces by ``index``."""
    deltas = []
    for index, call in enumerate(tool_calls(result) or ()):
        opening = schemas.ToolCallDelta(
            index=index,
            id=call.id,
            type="function",
            function=schemas.FunctionDelta(name=call.function.name, arguments=""),
        )
        arguments = schemas.ToolCallDelta(
            index=index, function=schemas.FunctionDelta(arguments=call.function.arguments)
        )
        deltas += [schemas.Delta(tool_calls=[opening]), schemas.Delta(tool_calls=[arguments])]
    return deltas


async def events(
    generation: Generation,
    first: str | None,
    pieces: AsyncIterator[str],
    content: Callable[[str], bytes],
    *,
    opening: bytes | None,
    closing: Callable[[GenerationResult], bytes],
    usage_chunk: Callable[[GenerationResult], bytes] | None,
) -> AsyncIterator[bytes]:
    """One streamed answer as SSE frames, the same for both endpoints: an optional opening frame,
    a frame per text piece, the finish frame, the usage frame if asked, then ``[DONE]``; or, when the
    answer did not complete, an error frame instead of the finish and ``[DONE]``. Whatever
    happens, the generation is cancelled so its slot goes to the next request."""
    try:
        if opening is not None:
            yield opening
        async for piece in _chain(first, pieces):
            yield content(piece)
        result = generation.result
        if result is None:
            yield frame(CUT_SHORT.body())
            return
        yield closing(result)
        if usage_chunk is not None:
            yield usage_chunk(result)
        yield DONE
    except Exception as exc:
        yield frame(_stream_error(exc))
    finally:
        generation.cancel()


async def _chain(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is None:
        return
    yield first
    async for piece in rest:
        yield piece


def _stream_error(exc: BaseException) -> dict[str, Any]:
    """An error after the 200 and some chunks went out: OpenAI clients read it from the stream."""
    if isinstance(exc, APIError):
        return exc.body()
    if isinstance(exc, Phi3Error):
        return from_phi3(exc).body()
    log.error("generation failed mid-stream", exc_info=exc)
    return unexpected(exc).body()


def response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


__all__ = ["DONE", "content_frame", "events", "frame", "response", "tool_call_deltas"]
