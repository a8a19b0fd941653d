"""The Responses API routes: ``POST /v1/responses`` (JSON or SSE), its WebSocket mode on the same path,
``POST /v1/responses/compact``, and ``GET`` / ``DELETE /v1/responses/{id}`` for stored responses.

Registered by :func:`install_responses_routes` (one call in :mod:`phi3.server.app`). Generation goes
through :meth:`Server.start_generation` exactly as the chat route's does: the same queue, slots,
lifecycle, metrics and cancellation; the Guard middleware checks host, origin, API key, content type
and body size on these routes too (WebSocket handshakes included). The mapping is
:mod:`phi3.server.responses`, the store :mod:`phi3.server.responses_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from phi3.server import schemas
from phi3.server.errors import APIError, bad_request, unexpected
from phi3.server.responses import (
    COMPACTION_MAX_TOKENS,
    COMPACTION_PROMPT,
    CompactedResponse,
    CompactionItem,
    CompactRequest,
    InputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    Turn,
    UserMessageItem,
    as_responses_error,
    encode_compaction,
    new_id,
    numbered,
    prepare,
    sse_frame,
    turn_events,
)
from phi3.server.responses_store import CONNECTION_RESPONSES, ResponseStore, StoredResponse
from phi3.server.serving import Server, collect, opening
from phi3.server.validation import parse_body, validation_error

log = logging.getLogger("phi3.server")
T = TypeVar("T")


class _SocketState:
    """What :func:`phi3.server.serving.opening` asks of a request: whether its client is gone."""

    def __init__(self, gone: asyncio.Event) -> None:
        self.gone = gone

    async def is_disconnected(self) -> bool:
        return self.gone.is_set()


def error_event(error: APIError) -> dict[str, Any]:
    """An error in WebSocket mode (the HTTP status it would have had, and OpenAI's error object)."""
    return {"type": "error", "status": error.status, **error.body()}


def install_responses_routes(app: FastAPI, server: Server, store: ResponseStore | None = None) -> ResponseStore:
    """Add the Responses API to ``app``; returns the store of responses kept for ``previous_response_id``."""
    responses = store if store is not None else ResponseStore()
    app.state.responses = responses

    def keep(turn: Turn, response: ResponseObject, connection: ResponseStore | None = None) -> None:
        stored = turn.stored(response)
        if turn.request.store is not False:
            responses.put(stored)
        if connection is not None:
            connection.put(stored)

    @app.post("/v1/responses", response_model=None)
    async def create_response(http: Request) -> Response:
        request = await parse_body(http, ResponsesRequest)
        turn = prepare(request, responses.get)
        generation = await turn.start(server, http.is_disconnected)
        if not request.stream:
            text = await _renamed(collect(generation, http))
            assert generation.result is not None
            final = turn.finish(text, generation.result, new_id("msg"), with_message=False)
            keep(turn, final)
            return JSONResponse(final.model_dump())
        first, pieces = await _renamed(opening(generation, http))

        async def frames() -> AsyncIterator[bytes]:
            async for event in numbered(turn_events(turn, generation, first, pieces, keep)):
                yield sse_frame(event)

        return StreamingResponse(
            frames(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.post("/v1/responses/compact", response_model=None)
    async def compact_response(http: Request) -> Response:
        request = await parse_body(http, CompactRequest)
        asked = ResponsesRequest(
            model=request.model,
            input=request.input,
            instructions=request.instructions,
            previous_response_id=request.previous_response_id,
            temperature=0,
            max_output_tokens=COMPACTION_MAX_TOKENS,
        )
        turn = prepare(asked, responses.get)
        turn.messages.append({"role": "user", "content": COMPACTION_PROMPT})
        generation = await turn.start(server, http.is_disconnected)
        summary = await _renamed(collect(generation, http))
        result = generation.result
        assert result is not None
        kept = [
            UserMessageItem(id=new_id("msg"), content=[InputText(text=str(message.get("content") or ""))])
            for message in turn.history
            if message["role"] == "user"
        ]
        compacted = CompactedResponse(
            id=new_id("resp"),
            created_at=schemas.now(),
            output=[*kept, CompactionItem(id=new_id("cmp"), encrypted_content=encode_compaction(summary.strip()))],
            usage=ResponseUsage(
                input_tokens=result.prompt_tokens,
                output_tokens=result.new_tokens,
                total_tokens=result.prompt_tokens + result.new_tokens,
            ),
        )
        return JSONResponse(compacted.model_dump())

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(response_id: str) -> JSONResponse:
        stored = responses.get(response_id)
        if stored is None:
            raise APIError(404, f"no stored response with id {response_id!r}", param="response_id", code="not_found")
        return JSONResponse(dict(stored.response))

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str) -> JSONResponse:
        if not responses.delete(response_id):
            raise APIError(404, f"no stored response with id {response_id!r}", param="response_id", code="not_found")
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    @app.websocket("/v1/responses")
    async def responses_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        connection = ResponseStore(max_entries=CONNECTION_RESPONSES, max_bytes=responses.max_bytes)
        inbox: asyncio.Queue[str | None] = asyncio.Queue()
        gone = asyncio.Event()

        async def read() -> None:
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    text = message.get("text")
                    if text is None and message.get("bytes") is not None:
                        text = bytes(message["bytes"]).decode("utf-8", errors="replace")
                    await inbox.put(text or "")
            except (WebSocketDisconnect, RuntimeError):
                return
            finally:
                gone.set()
                inbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                text = await inbox.get()
                if text is None:
                    return
                await _socket_turn(text, websocket, gone, connection)
        except (WebSocketDisconnect, RuntimeError):
            return  # the client left while we were sending
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _socket_turn(text: str, websocket: WebSocket, gone: asyncio.Event, connection: ResponseStore) -> None:
        """One ``response.create``: its events, or one ``error`` event."""
        extra: dict[str, Any] = {}
        try:
            if len(text.encode()) > server.settings.max_body_bytes:
                raise APIError(
                    413,
                    f"the message is over the {server.settings.max_body_bytes} byte limit; send a shorter input",
                    code="request_too_large",
                )
            data = _event_body(text)
            if data.pop("generate", True) is False:
                raise bad_request(
                    "generate: false (warm-up) is not supported; send the first turn itself", param="generate"
                )
            if isinstance(data.get("stream_id"), str):
                extra["stream_id"] = data.pop("stream_id")
            data.pop("stream", None)
            data.pop("stream_options", None)
            try:
                request = ResponsesRequest.model_validate(data)
            except ValidationError as exc:
                raise validation_error(exc.errors()) from None

            def find(response_id: str) -> StoredResponse | None:
                return connection.get(response_id) or responses.get(response_id)

            turn = prepare(request, find)
            state = _SocketState(gone)
            generation = await turn.start(server, state.is_disconnected)
            first, pieces = await opening(generation, cast(Request, state))
        except APIError as exc:
            await websocket.send_text(json.dumps({**error_event(as_responses_error(exc)), **extra}))
            return
        except Exception as exc:  # a bug: one line to the client, the traceback to the log
            log.error("responses websocket turn failed", exc_info=exc)
            await websocket.send_text(json.dumps({**error_event(unexpected(exc)), **extra}))
            return

        watcher = asyncio.create_task(_cancel_when(gone, generation.cancel))
        try:
            events = turn_events(turn, generation, first, pieces, lambda t, r: keep(t, r, connection))
            async for event in numbered(events, extra):
                await websocket.send_text(json.dumps(event, ensure_ascii=False))
        finally:
            watcher.cancel()
            generation.cancel()

    return responses


async def _renamed(work: Awaitable[T]) -> T:
    """``work``, its errors named with the Responses parameters (``input``, not ``messages``)."""
    try:
        return await work
    except APIError as exc:
        raise as_responses_error(exc) from None


def _event_body(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise bad_request(f"the message is not valid JSON ({exc}); send a JSON object", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the message must be a JSON object", code="invalid_json")
    kind = data.pop("type", None)
    if kind != "response.create":
        raise bad_request(
            f"unsupported event type {kind!r}; phi3's WebSocket mode takes response.create events",
            param="type",
            code="unknown_event",
        )
    return data


async def _cancel_when(gone: asyncio.Event, cancel: Callable[[], None]) -> None:
    await gone.wait()
    cancel()


__all__ = ["install_responses_routes"]
