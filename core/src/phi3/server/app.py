"""The FastAPI application: routes, the API-key and body-size guard, CORS, error answers.

Built on the public API only: models come from :func:`phi3.load` (through
:class:`~phi3.server.pool.ModelPool`) and generate through ``Model.chat_stream`` / ``Model.stream``,
so the server gets phi3's stop strings, ``max_new_tokens`` cap, chat template and timings exactly
as the CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from phi3 import __version__, tools
from phi3.errors import ConfigError, Phi3Error, UnsupportedError
from phi3.generation_config import GenerationConfig
from phi3.model import Model, TextStream
from phi3.server import schemas
from phi3.server.errors import APIError, bad_request, from_phi3, unexpected
from phi3.server.metrics import Metrics
from phi3.server.model_spec import Defaults
from phi3.server.pool import Entry, Loader, ModelPool
from phi3.server.slots import QueueFull
from phi3.server.streaming import Generation
from phi3.types import GenerationResult

log = logging.getLogger("phi3.server")

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
RETRY_AFTER_S = 1
DISCONNECT_POLL_S = 0.25
"""How often a non-streamed request checks that its client is still connected."""
ROUTES = ("/v1/models", "/v1/chat/completions", "/v1/completions", "/health", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``phi3 serve`` configures, apart from host and port."""

    models: tuple[str, ...] = ()
    defaults: Defaults = dataclasses.field(default_factory=Defaults)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_loaded: int = 1
    idle_unload: float | None = None
    max_queue: int = 16
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: API key on ``/v1`` routes, then the body size limit, before any parsing.

    It runs before FastAPI reads the body, so a request without the key gets 401 even when its body
    is malformed, and an oversized body is refused (413) without being buffered.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.limit = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
            await send(message)

        try:
            await self._guarded(scope, receive, counting_send, path)
        finally:
            self.metrics.requests.labels(route, str(status_seen[0] if status_seen else 499)).inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = dict(scope.get("headers") or [])
        if self.key is not None and path.startswith("/v1") and scope.get("method") != "OPTIONS":
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                await _send_error(
                    send,
                    APIError(
                        401,
                        "missing or wrong API key; send the header 'Authorization: Bearer KEY' "
                        "with the key the server was started with",
                        code="invalid_api_key",
                    ),
                )
                return
        too_large = APIError(
            413,
            f"the request body is over the {self.limit} byte limit; send a shorter prompt",
            code="request_too_large",
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(send, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, too_large)


# -- request -> phi3 -------------------------------------------------------------------------------


def generation_config(request: schemas.ChatCompletionRequest | schemas.CompletionRequest) -> GenerationConfig:
    """The phi3 config a request asks for; a 400 naming the parameter when it is not valid.

    ``temperature`` absent or 0 means greedy decoding (phi3's default: reproducible answers);
    above 0 it samples. ``top_p`` alone samples at temperature 1, as OpenAI does.
    """
    refused = schemas.unsupported(request)
    if refused is not None:
        name, why = refused
        raise bad_request(f"{name} is not supported: {why}", param=name, code="unsupported_parameter")
    options: dict[str, Any] = {}
    max_tokens = request.max_tokens
    if isinstance(request, schemas.ChatCompletionRequest) and request.max_completion_tokens is not None:
        max_tokens = request.max_completion_tokens
    if max_tokens is not None:
        options["max_new_tokens"] = max_tokens
    sample = bool(request.temperature) or (request.temperature is None and request.top_p is not None)
    if sample:
        options.update(do_sample=True, temperature=request.temperature or 1.0)
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.top_k is not None:
            options["top_k"] = request.top_k
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop is not None:
        stops = [request.stop] if isinstance(request.stop, str) else request.stop
        if len(stops) > 4 or not all(stops):
            raise bad_request("stop must be up to 4 non-empty strings", param="stop")
        options["stop"] = tuple(stops)
    if request.repetition_penalty is not None:
        options["repetition_penalty"] = request.repetition_penalty
    if request.ignore_eos is not None:
        options["ignore_eos"] = request.ignore_eos
    structured = _structured_options(request)
    try:
        return GenerationConfig.from_options(**options, **structured)
    except ConfigError as exc:
        raise bad_request(str(exc), param="response_format" if structured else None) from exc


def _structured_options(request: schemas.ChatCompletionRequest | schemas.CompletionRequest) -> dict[str, Any]:
    """``response_format`` as GenerationConfig fields; a 400 naming the part that is wrong."""
    try:
        return schemas.structured_options(request.response_format)
    except ValidationError as exc:
        # the first location is the union's tag (json_schema ...): name the field instead
        errors = [{**error, "loc": ("response_format", *error.get("loc", ())[1:])} for error in exc.errors()]
        raise _validation_error(errors) from None


def check_supported(config: GenerationConfig) -> Callable[[Model], None]:
    """A check run once the model is loaded, before a slot is taken: a constraint its backend
    cannot enforce is a 400 naming ``response_format``, not a failed stream."""

    def check(model: Model) -> None:
        try:
            model.check_supported(config)
        except UnsupportedError as exc:
            raise bad_request(str(exc), param="response_format", code="unsupported_parameter") from None

    return check


def check_tools_supported(config: GenerationConfig, tool_options: Mapping[str, Any]) -> Callable[[Model], None]:
    """:func:`check_supported`, and for a chat offering tools, that the backend enforces the
    ``json_schema`` constraint tool calls are decoded under (a 400 naming ``tools`` otherwise)."""
    supported = check_supported(config)
    offered = bool(tool_options) and tools.check_request(**tool_options).choice != "none"

    def check(model: Model) -> None:
        supported(model)
        if offered and "json_schema" not in model.structured_output:
            raise bad_request(
                f"backend {model.backend!r} (engine {model.engine!r}) cannot enforce json_schema output, which "
                "tool calling needs to keep arguments valid; serve the model on a backend that lists json_schema "
                "in `phi3 list-backends`, or send tool_choice 'none'",
                param="tools",
                code="unsupported_parameter",
            )

    return check


def chat_messages(request: schemas.ChatCompletionRequest) -> list[dict[str, Any]]:
    """OpenAI messages as phi3 chat messages (``developer`` is the newer name of ``system``)."""
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        messages.append(message)
    return messages


def chat_tools(request: schemas.ChatCompletionRequest) -> dict[str, Any]:
    """``tools`` / ``tool_choice`` / ``parallel_tool_calls`` for ``Model.chat_stream``, checked up
    front so a bad definition is a 400 naming the parameter (see :mod:`phi3.tools`)."""
    options = {
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
    }
    for param, check in (
        ("tools", lambda: request.tools is None or tools.check_tools(request.tools)),
        ("parallel_tool_calls", lambda: tools.check_request(None, None, options["parallel_tool_calls"])),
        ("tool_choice", lambda: tools.check_request(**options)),
    ):
        try:
            check()
        except ConfigError as exc:
            raise bad_request(str(exc), param=param) from exc
    return options if request.tools is not None or request.tool_choice is not None else {}


def tool_calls(result: GenerationResult) -> list[schemas.ToolCall] | None:
    """The answer's calls as OpenAI returns them (arguments as JSON text), or None."""
    if not result.tool_calls:
        return None
    return [
        schemas.ToolCall(
            id=call.id,
            function=schemas.FunctionCall(
                name=call.name, arguments=json.dumps(dict(call.arguments), ensure_ascii=False)
            ),
        )
        for call in result.tool_calls
    ]


def completion_prompt(request: schemas.CompletionRequest) -> str:
    if isinstance(request.prompt, list):
        if len(request.prompt) != 1:
            raise bad_request(
                f"prompt is a list of {len(request.prompt)} prompts; phi3 answers one prompt per request",
                param="prompt",
                code="unsupported_parameter",
            )
        return request.prompt[0]
    return request.prompt


def finish_reason(result: GenerationResult) -> schemas.FinishReason:
    if result.finish_reason in ("length", "tool_calls"):
        return result.finish_reason
    return "stop"


def usage(result: GenerationResult) -> schemas.Usage:
    return schemas.Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.new_tokens,
        total_tokens=result.prompt_tokens + result.new_tokens,
    )


def timings(result: GenerationResult) -> schemas.Timings:
    rate = result.decode_tokens_per_s
    return schemas.Timings(
        prompt_n=result.prompt_tokens,
        prompt_ms=result.time_to_first_token_s * 1000,
        predicted_n=result.new_tokens,
        predicted_ms=(result.new_tokens - 1) / rate * 1000 if rate > 0 else 0.0,
        predicted_per_token_ms=1000 / rate if rate > 0 else None,
        predicted_per_second=rate if rate > 0 else None,
    )


def _sse(payload: BaseModel | dict[str, Any]) -> bytes:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


# -- the application -------------------------------------------------------------------------------


class Server:
    """State shared by the routes: the pool, the metrics and the generations running now."""

    def __init__(self, settings: ServerSettings, loader: Loader | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.pool = ModelPool(
            served=settings.models,
            defaults=settings.defaults,
            metrics=self.metrics,
            max_loaded=settings.max_loaded,
            idle_unload=settings.idle_unload,
            max_queue=settings.max_queue,
            loader=loader,
        )
        self.running: set[Generation] = set()

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
        entry = await self.pool.get(field)
        name = entry.name  # the model field that loaded it: one metrics series per loaded variant
        try:
            if check is not None:
                check(entry.model)
            self.metrics.queue_depth.labels(name).set(entry.slots.waiting + 1)
            try:
                if not await _wait_unless_disconnected(entry.slots.acquire(), disconnected):
                    self.metrics.abandoned.labels(name).inc()
                    raise APIError(499, "the client closed the connection while waiting in the queue", code="cancelled")
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

        model = entry.model
        generation = Generation(lambda: open_stream(model), finished)
        self.running.add(generation)
        generation.start()
        return generation

    async def loaded_cards(self) -> list[schemas.ModelCard]:
        """What ``/health`` lists: the loaded models (the Ray runner lists them per replica)."""
        return [_card(e) for e in self.pool.entries()]

    async def model_list(self) -> schemas.ModelList:
        """What ``/v1/models`` lists: the served ids, then every loaded variant."""
        cards: dict[str, schemas.ModelCard] = {name: schemas.ModelCard(id=name, created=0) for name in self.pool.served}
        for entry in self.pool.entries():
            card = _card(entry)
            if entry.spec.model in cards and entry.spec == self.pool.resolve(entry.spec.model):
                card.id = entry.spec.model
            cards[card.id] = card
        return schemas.ModelList(data=list(cards.values()))

    async def render_metrics(self) -> bytes:
        """The Prometheus text of ``/metrics``."""
        return self.metrics.render()

    async def shutdown(self) -> None:
        for generation in list(self.running):
            generation.cancel()
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await self.pool.shutdown()


async def _wait_unless_disconnected(
    acquire: Coroutine[Any, Any, None], disconnected: Callable[[], Awaitable[bool]] | None
) -> bool:
    """Run ``acquire``; False (and ``acquire`` cancelled, its queue place given up) if the client
    disconnects first. Checked every DISCONNECT_POLL_S, only while the request is waiting."""
    task = asyncio.ensure_future(acquire)
    if disconnected is None:
        await task
        return True
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            task.result()  # QueueFull and other errors propagate
            return True
        if await disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # the slot may have come just as the client left: then the caller's normal path releases it
            return not task.cancelled() and task.exception() is None


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


def create_app(
    settings: ServerSettings,
    loader: Loader | None = None,
    preloaded: Mapping[str, Model] | None = None,
    server: Server | None = None,
) -> FastAPI:
    """The application for ``settings``.

    ``loader`` replaces :func:`phi3.load` (for embedding); ``preloaded`` are models already loaded
    (``--preload`` loads before the server starts, so a failure is phi3's one-line CLI error).
    ``server`` replaces the in-process :class:`Server`: the Ray runner passes one whose generations
    run on model replicas (:mod:`phi3.server.ray_ingress`), so both runners share every route.
    """
    server = server if server is not None else Server(settings, loader)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, model in (preloaded or {}).items():
            server.pool.adopt(name, model)
        server.pool.start()
        log.info("phi3 serve ready: models %s", ", ".join(settings.models) or "(any phi3 model id)")
        try:
            yield
        finally:
            await server.shutdown()
            log.info("phi3 serve stopped")

    app = FastAPI(title="phi3", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and what is loaded."""
        return {
            "status": "ok",
            "version": __version__,
            "loaded": [card.model_dump() for card in await server.loaded_cards()],
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await server.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def list_models() -> schemas.ModelList:
        return await server.model_list()

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(http: Request) -> Response:
        request = await _parse(http, schemas.ChatCompletionRequest)
        config = generation_config(request)
        messages = chat_messages(request)
        tool_options = chat_tools(request)
        generation = await server.start_generation(
            request.model,
            lambda model: model.chat_stream(messages, config, **tool_options),
            http.is_disconnected,
            check_tools_supported(config, tool_options),
        )
        completion_id = schemas.new_id("chatcmpl")
        created = schemas.now()
        if not request.stream:
            text = await _collect(generation, http)
            assert generation.result is not None
            return JSONResponse(
                schemas.ChatCompletion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[
                        schemas.ChatChoice(
                            message=schemas.ResponseMessage(
                                content=text or None if generation.result.tool_calls else text,
                                tool_calls=tool_calls(generation.result),
                            ),
                            finish_reason=finish_reason(generation.result),
                        )
                    ],
                    usage=usage(generation.result),
                    timings=timings(generation.result),
                ).model_dump()
            )
        first, pieces = await _opening(generation)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(delta: schemas.Delta, finish: schemas.FinishReason | None = None) -> bytes:
            return _sse(
                schemas.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[schemas.ChatChunkChoice(delta=delta, finish_reason=finish)],
                )
            )

        content = _content_chunk(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": request.model},
            '"delta":{"content":',
            "}",
        )

        def usage_chunk(result: GenerationResult) -> bytes:
            return _sse(
                schemas.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[],
                    usage=usage(result),
                    timings=timings(result),
                )
            )

        return _event_stream(
            _sse_events(
                generation,
                first,
                pieces,
                content,
                opening=chunk(schemas.Delta(role="assistant", content="")),
                closing=lambda result: (
                    b"".join(chunk(delta) for delta in _tool_call_deltas(result))
                    + chunk(schemas.Delta(), finish_reason(result))
                ),
                usage_chunk=usage_chunk if include_usage else None,
            )
        )

    @app.post("/v1/completions", response_model=None)
    async def completions(http: Request) -> Response:
        request = await _parse(http, schemas.CompletionRequest)
        config = generation_config(request)
        prompt = completion_prompt(request)
        generation = await server.start_generation(
            request.model, lambda model: model.stream(prompt, config), http.is_disconnected, check_supported(config)
        )
        completion_id = schemas.new_id("cmpl")
        created = schemas.now()
        if not request.stream:
            text = await _collect(generation, http)
            assert generation.result is not None
            return JSONResponse(
                schemas.Completion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[schemas.CompletionChoice(text=text, finish_reason=finish_reason(generation.result))],
                    usage=usage(generation.result),
                    timings=timings(generation.result),
                ).model_dump()
            )
        first, pieces = await _opening(generation)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(text: str, finish: schemas.FinishReason | None = None) -> bytes:
            return _sse(
                schemas.Completion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[schemas.CompletionChoice(text=text, finish_reason=finish)],
                )
            )

        content = _content_chunk(
            {"id": completion_id, "object": "text_completion", "created": created, "model": request.model},
            '"text":',
            "",
        )

        def usage_chunk(result: GenerationResult) -> bytes:
            return _sse(
                schemas.Completion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[],
                    usage=usage(result),
                    timings=timings(result),
                )
            )

        return _event_stream(
            _sse_events(
                generation,
                first,
                pieces,
                content,
                opening=None,
                closing=lambda result: chunk("", finish_reason(result)),
                usage_chunk=usage_chunk if include_usage else None,
            )
        )

    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes, metrics=server.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _tool_call_deltas(result: GenerationResult) -> list[schemas.Delta]:
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


async def _sse_events(
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
    a frame per text piece, the finish frame, the usage frame if asked, then ``[DONE]``. An error
    mid-stream is sent as an OpenAI error frame (the status line is gone by then); whatever
    happens, the generation is cancelled so its slot goes to the next request."""
    try:
        if opening is not None:
            yield opening
        async for piece in _chain(first, pieces):
            yield content(piece)
        result = generation.result
        if result is None:
            return
        yield closing(result)
        if usage_chunk is not None:
            yield usage_chunk(result)
        yield b"data: [DONE]\n\n"
    except Exception as exc:
        yield _sse(_stream_error(exc))
        yield b"data: [DONE]\n\n"
    finally:
        generation.cancel()


RequestT = TypeVar("RequestT", bound=BaseModel)


async def _parse(http: Request, schema: type[RequestT]) -> RequestT:
    """The body as ``schema``, whatever the Content-Type says (curl -d sends a form type), or a 400."""
    body = await http.body()
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise bad_request(
            f"the request body is not valid JSON ({exc}); send a JSON object", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc.errors()) from None


def _content_chunk(head: dict[str, Any], before: str, after: str) -> Callable[[str], bytes]:
    """A fast serializer for the chunks that carry text (one per decoded piece).

    Equal to the pydantic chunk models' JSON, but built from a pre-rendered frame, so the server's
    per-token cost stays far below a token's decode time.
    """
    frame = json.dumps(head)[:-1]
    prefix = f'data: {frame},"choices":[{{"index":0,{before}'.encode()
    suffix = f'{after},"finish_reason":null,"logprobs":null}}]}}\n\n'.encode()

    def render(piece: str) -> bytes:
        return prefix + json.dumps(piece).encode() + suffix

    return render


def _card(entry: Entry) -> schemas.ModelCard:
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


async def _collect(generation: Generation, http: Request) -> str:
    """The whole answer; a generation error becomes the matching HTTP error.

    A client that gives up on a non-streamed answer (a timeout, Ctrl-C) cancels the generation
    too: a watcher polls the connection, so the model is not kept busy for nobody.
    """

    async def watch() -> None:
        while True:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await http.is_disconnected():
                generation.cancel()
                return

    watcher = asyncio.create_task(watch())
    parts: list[str] = []
    try:
        async for piece in generation.pieces():
            parts.append(piece)
    except BaseException as exc:
        generation.cancel()
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        _raise_generation_error(exc)
    finally:
        watcher.cancel()
    if generation.result is None:  # cancelled: the client is gone, this answer reaches no one
        raise APIError(499, "the client closed the connection before the answer was complete", code="cancelled")
    return "".join(parts)


async def _opening(generation: Generation) -> tuple[str | None, AsyncIterator[str]]:
    """Wait for the first piece before answering 200, so an early failure is a proper HTTP error."""
    pieces = generation.pieces()
    try:
        return await _first(pieces)
    except BaseException as exc:
        generation.cancel()
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise
        _raise_generation_error(exc)
        raise  # unreachable: _raise_generation_error always raises


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


def _event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        error = APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(unexpected(exc).body(), status_code=500)


UNION_BRANCHES = ("list[", "function-after[", "constrained-")
"""How pydantic names the branch of a union in an error's location (not a parameter name)."""


def _validation_error(errors: Sequence[Any]) -> APIError:
    """One line naming the first bad parameter, as OpenAI's 400s do."""
    if not errors:
        return bad_request("the request body is not valid")
    # a union (a string or a list of parts) fails once per branch: report the deepest, most specific one
    first = max(errors, key=lambda error: (len(error.get("loc", ())), error.get("type") == "value_error"))
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return bad_request(f"the request body is not valid JSON ({detail}); send a JSON object", code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # a union (str | list of parts) reports each branch: name the field, not the branch
    loc = [part for part in loc if part not in ("str", "int", "float", "bool") and not part.startswith(UNION_BRANCHES)]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return bad_request(
            f"unrecognized request argument: {param}; phi3 does not know it",
            param=param,
            code="unknown_parameter",
        )
    if first.get("type") == "missing" and param:
        return bad_request(f"missing required parameter: {param}", param=param, code="missing_required_parameter")
    where = f"{param}: " if param else ""
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return bad_request(f"invalid request: {where}{message}", param=param)
