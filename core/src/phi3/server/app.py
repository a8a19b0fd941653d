"""The FastAPI application: its routes, middleware and error answers, and nothing else.

Each route parses its body (:mod:`~phi3.server.validation`), maps the request onto phi3
(:mod:`~phi3.server.mapping`), starts a generation on the shared :class:`~phi3.server.serving.Server`
and answers as JSON or server-sent events (:mod:`~phi3.server.sse`). Models come from
:func:`phi3.load` and generate through ``Model.chat_stream`` / ``Model.stream``, so the server gets
phi3's stop strings, chat template, tools and timings exactly as the CLI does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from phi3 import __version__
from phi3.model import Model
from phi3.server import schemas, sse
from phi3.server.errors import APIError, unexpected
from phi3.server.guard import Guard
from phi3.server.mapping import (
    chat_messages,
    chat_tools,
    check_supported,
    check_tools_supported,
    completion_prompt,
    finish_reason,
    request_config,
    timings,
    tool_calls,
    usage,
)
from phi3.server.pool import Loader
from phi3.server.responses_routes import install_responses_routes
from phi3.server.serving import Server, ServerSettings, collect, opening
from phi3.server.ui_routes import install_ui_routes
from phi3.server.validation import parse_body, validation_error
from phi3.types import GenerationResult

log = logging.getLogger("phi3.server")


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

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> schemas.ModelCard:
        return await server.model_card(model_id)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(http: Request) -> Response:
        request = await parse_body(http, schemas.ChatCompletionRequest)
        plan = request_config(request)
        messages = chat_messages(request)
        tool_options = chat_tools(request)
        generation = await server.start_generation(
            request.model,
            lambda model: model.chat_stream(messages, plan.for_model(model), **tool_options),
            http.is_disconnected,
            check_tools_supported(plan, tool_options),
        )
        completion_id = schemas.new_id("chatcmpl")
        created = schemas.now()
        if not request.stream:
            text = await collect(generation, http)
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
        first, pieces = await opening(generation, http)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(delta: schemas.Delta, finish: schemas.FinishReason | None = None) -> bytes:
            return sse.frame(
                schemas.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[schemas.ChatChunkChoice(delta=delta, finish_reason=finish)],
                )
            )

        content = sse.content_frame(
            {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": request.model},
            '"delta":{"content":',
            "}",
        )

        def usage_chunk(result: GenerationResult) -> bytes:
            return sse.frame(
                schemas.ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[],
                    usage=usage(result),
                    timings=timings(result),
                )
            )

        return sse.response(
            sse.events(
                generation,
                first,
                pieces,
                content,
                opening=chunk(schemas.Delta(role="assistant", content="")),
                closing=lambda result: (
                    b"".join(chunk(delta) for delta in sse.tool_call_deltas(result))
                    + chunk(schemas.Delta(), finish_reason(result))
                ),
                usage_chunk=usage_chunk if include_usage else None,
            )
        )

    @app.post("/v1/completions", response_model=None)
    async def completions(http: Request) -> Response:
        request = await parse_body(http, schemas.CompletionRequest)
        plan = request_config(request)
        prompt = completion_prompt(request)
        generation = await server.start_generation(
            request.model,
            lambda model: model.stream(prompt, plan.for_model(model)),
            http.is_disconnected,
            check_supported(plan),
        )
        completion_id = schemas.new_id("cmpl")
        created = schemas.now()
        if not request.stream:
            text = await collect(generation, http)
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
        first, pieces = await opening(generation, http)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(text: str, finish: schemas.FinishReason | None = None) -> bytes:
            return sse.frame(
                schemas.Completion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[schemas.CompletionChoice(text=text, finish_reason=finish)],
                )
            )

        content = sse.content_frame(
            {"id": completion_id, "object": "text_completion", "created": created, "model": request.model},
            '"text":',
            "",
        )

        def usage_chunk(result: GenerationResult) -> bytes:
            return sse.frame(
                schemas.Completion(
                    id=completion_id,
                    created=created,
                    model=request.model,
                    choices=[],
                    usage=usage(result),
                    timings=timings(result),
                )
            )

        return sse.response(
            sse.events(
                generation,
                first,
                pieces,
                content,
                opening=None,
                closing=lambda result: chunk("", finish_reason(result)),
                usage_chunk=usage_chunk if include_usage else None,
            )
        )

    install_responses_routes(app, server)
    if settings.ui:
        install_ui_routes(app)
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        metrics=server.metrics,
        allowed_hosts=settings.allowed_hosts,
        cors_origins=settings.cors_origins,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=list(settings.cors_headers),
        )
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc.errors()).body(), status_code=400)

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


__all__ = ["Server", "ServerSettings", "create_app"]
