"""OpenAI requests as phi3 calls, and phi3 results as OpenAI response fields.

The one place where the HTTP API's names and defaults meet phi3's :class:`~phi3.GenerationConfig`,
messages and tools. Two defaults depend on the loaded model, so a request becomes a
:class:`RequestConfig` that is completed once the model is known (:meth:`RequestConfig.for_model`):

- ``max_tokens`` absent: up to the model's context (OpenAI, llama.cpp and vLLM do the same; phi3's
  API default of 256 would cut most answers short for apps that never read ``finish_reason``).
- ``temperature`` absent: the sampling defaults of the model's ``generation_config.json`` when its
  artifact has one that sets them, otherwise OpenAI's (sampling at temperature 1, top_p 1).
  ``temperature: 0`` is greedy decoding.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from phi3 import tools
from phi3.errors import ConfigError, UnsupportedError
from phi3.generation_config import GenerationConfig
from phi3.model import Model
from phi3.server import schemas
from phi3.server.errors import bad_request, from_phi3
from phi3.server.validation import validation_error
from phi3.types import GenerationResult

MAX_STOP_STRINGS = 64
"""llama.cpp's server takes any number of stop strings; phi3 matches each on the decoded text, so a
bound keeps that cheap (apps moving from llama.cpp send 5-20)."""
OPENAI_SAMPLING: dict[str, Any] = {"do_sample": True, "temperature": 1.0}
"""What OpenAI does when a request sends no temperature."""
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p")
"""The ``generation_config.json`` fields phi3 takes as a model's sampling defaults."""


@dataclass(frozen=True)
class RequestConfig:
    """A request's generation settings; :meth:`for_model` fills what depends on the model."""

    config: GenerationConfig
    budget_from_model: bool
    """``max_tokens`` was absent: generate up to the model's context."""
    sampling_from_model: bool
    """``temperature`` was absent: the model's sampling defaults (or OpenAI's) apply."""
    explicit_sampling: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """``top_p`` / ``top_k`` / ``min_p`` the request sent: they win over the model's defaults."""

    def for_model(self, model: Model) -> GenerationConfig:
        changes: dict[str, Any] = {}
        if self.budget_from_model and model.context_length:
            changes["max_new_tokens"] = model.context_length
        if self.sampling_from_model:
            changes.update(model_sampling(model))
            changes.update(self.explicit_sampling)
        return self.config.replace(**changes) if changes else self.config


def model_sampling(model: Model) -> dict[str, Any]:
    """The model's sampling defaults (``generation_config.json`` beside its artifact), else OpenAI's."""
    return dict(_sampling_defaults(Path(model.artifact.path) / "generation_config.json"))


@functools.lru_cache(maxsize=32)
def _sampling_defaults(path: Path) -> tuple[tuple[str, Any], ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or not ({"do_sample", "temperature"} & set(data)):
        return tuple(OPENAI_SAMPLING.items())
    found = {name: data[name] for name in SAMPLING_FIELDS if data.get(name) is not None}
    if found.get("do_sample") is False or found.get("temperature") == 0:
        return (("do_sample", False),)
    found["do_sample"] = True
    try:  # a value phi3 does not accept (top_k=None spelled oddly, ...) falls back to OpenAI's defaults
        GenerationConfig.from_options(**found)
    except ConfigError:
        return tuple(OPENAI_SAMPLING.items())
    return tuple(found.items())


def request_config(request: schemas.ChatCompletionRequest | schemas.CompletionRequest) -> RequestConfig:
    """The phi3 settings a request asks for; a 400 naming the parameter when one is not valid."""
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
    explicit = {
        name: value
        for name, value in (("top_p", request.top_p), ("top_k", request.top_k), ("min_p", request.min_p))
        if value is not None
    }
    if request.temperature is not None and request.temperature > 0:
        options.update(do_sample=True, temperature=request.temperature, **explicit)
    elif request.temperature is not None:
        options["do_sample"] = False
    options["seed"] = _seed(request.seed)
    if request.stop is not None:
        stops = [request.stop] if isinstance(request.stop, str) else request.stop
        if len(stops) > MAX_STOP_STRINGS or not all(stops):
            raise bad_request(f"stop must be up to {MAX_STOP_STRINGS} non-empty strings", param="stop")
        options["stop"] = tuple(stops)
    options["repetition_penalty"] = _repetition_penalty(request)
    if request.ignore_eos is not None:
        options["ignore_eos"] = request.ignore_eos
    structured = _structured_options(request)
    try:
        config = GenerationConfig.from_options(**options, **structured)
    except ConfigError as exc:
        raise bad_request(str(exc), param="response_format" if structured else None) from exc
    return RequestConfig(config, max_tokens is None, request.temperature is None, explicit)


def _seed(seed: int | None) -> int | None:
    """``-1`` (llama.cpp's spelling) and absent both mean a fresh random seed; a larger seed than
    the runtimes take (vLLM accepts 64-bit ones) is folded into their 32 bits."""
    if seed is None or seed == -1:
        return None
    return seed % 2**32


def _repetition_penalty(request: schemas.ChatCompletionRequest | schemas.CompletionRequest) -> float | None:
    """``repetition_penalty`` (vLLM's name) or ``repeat_penalty`` (llama.cpp's and Ollama's): the same
    control, phi3's rule (see GenerationConfig); both with different values is a 400."""
    given = {v for v in (request.repetition_penalty, request.repeat_penalty) if v is not None}
    if len(given) > 1:
        raise bad_request(
            "repetition_penalty and repeat_penalty are the same control with different values; send one",
            param="repeat_penalty",
        )
    return float(given.pop()) if given else None


def _structured_options(request: schemas.ChatCompletionRequest | schemas.CompletionRequest) -> dict[str, Any]:
    """``response_format`` as GenerationConfig fields; a 400 naming the part that is wrong."""
    try:
        return schemas.structured_options(request.response_format)
    except ValidationError as exc:
        # the first location is the union's tag (json_schema ...): name the field instead
        errors = [{**error, "loc": ("response_format", *error.get("loc", ())[1:])} for error in exc.errors()]
        raise validation_error(errors) from None


def check_supported(plan: RequestConfig) -> Callable[[Model], None]:
    """A check run once the model is loaded, before a slot is taken: a constraint its backend cannot
    enforce (400 naming ``response_format``) or a sampling control it lacks (400 naming it), not a
    failed stream."""

    def check(model: Model) -> None:
        config = plan.for_model(model)
        try:
            model.check_supported(config)
        except UnsupportedError as exc:
            param = "min_p" if config.do_sample and config.min_p > 0 and "min_p" not in model.sampling else None
            raise bad_request(str(exc), param=param or "response_format", code="unsupported_parameter") from None

    return check


def check_tools_supported(plan: RequestConfig, tool_options: Mapping[str, Any]) -> Callable[[Model], None]:
    """:func:`check_supported`, and for a chat with tools, phi3's tool rules
    (:func:`phi3.tools.check_supported`: e.g. the backend must enforce the ``json_schema``
    constraint tool calls are decoded under), as a 400 naming ``tools``."""
    supported = check_supported(plan)
    request = tools.check_request(**tool_options) if tool_options else None

    def check(model: Model) -> None:
        supported(model)
        if request is None:
            return
        try:
            tools.check_supported(model, request, plan.for_model(model))
        except UnsupportedError as exc:
            raise bad_request(str(exc), param="tools", code="unsupported_parameter") from None
        except ConfigError as exc:  # e.g. tools with response_format: what the stream would refuse
            raise from_phi3(exc) from None

    return check


def chat_messages(request: schemas.ChatCompletionRequest) -> list[dict[str, Any]]:
    """OpenAI messages as phi3 chat messages (``developer`` is the newer name of ``system``).

    ``name`` is passed on to the chat template; the Phi-3 family's templates do not show it to the
    model (documented in docs/server.md)."""
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        if m.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name:
            message["name"] = m.name
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


# -- phi3 result -> response fields ----------------------------------------------------------------


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


__all__ = [
    "RequestConfig",
    "chat_messages",
    "chat_tools",
    "check_supported",
    "check_tools_supported",
    "completion_prompt",
    "finish_reason",
    "model_sampling",
    "request_config",
    "timings",
    "tool_calls",
    "usage",
]
