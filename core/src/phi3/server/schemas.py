"""Request and response bodies of the OpenAI-compatible API, in one place.

Requests are strict: a field phi3 does not know is a 400 naming it (OpenAI does the same), and a
known OpenAI field phi3 cannot honour (``n`` > 1, ``logprobs``, the deprecated ``functions`` ...) is
a 400 naming it too (:func:`unsupported`), never silently ignored. ``response_format``
(:data:`ResponseFormat`) is enforced by constrained decoding, or refused with a 400 when the
model's backend cannot enforce it: a client that asked for JSON must not get prose back believing
it is JSON. ``tools`` are offered as :mod:`phi3.tools` describes.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    model_validator,
)

Number = StrictInt | StrictFloat


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(BaseModel):
    """One part of a message's content; only ``{"type": "text", "text": ...}`` is accepted."""

    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ContentPart:
        if self.type != "text":
            raise ValueError(f"content part type {self.type!r} is not supported: Phi-3 reads text parts only")
        if self.text is None:
            raise ValueError("a text content part needs a 'text' string")
        return self


class FunctionCall(_Strict):
    name: StrictStr
    arguments: StrictStr
    """JSON text, as OpenAI sends and returns it."""


class ToolCall(_Strict):
    """A call in an assistant turn of the history (``message.tool_calls`` of an earlier answer)."""

    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: StrictStr | None = None
    name: StrictStr | None = None
    """OpenAI's participant name (langchain sends it for named messages and agents): passed to the
    chat template, which for the Phi-3 family does not show it to the model."""
    refusal: StrictStr | None = None  # sent back by clients that echo an earlier answer

    @model_validator(mode="after")
    def _content_or_calls(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant turn with tool_calls may leave it out)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        """The content as one string (text parts joined, as OpenAI concatenates them)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.text or "" for part in self.content)


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    include_obfuscation: StrictBool | None = None


class _Sampling(_Strict):
    """Fields shared by both generation endpoints."""

    model: StrictStr = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    seed: StrictInt | None = Field(default=None, ge=-1, lt=2**64)
    """-1 (llama.cpp's spelling) means a fresh random seed, as leaving it out does."""
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    # phi3 extensions (vLLM and llama.cpp accept these too)
    top_k: StrictInt | None = Field(default=None, ge=0)
    min_p: Number | None = Field(default=None, ge=0, lt=1)
    repetition_penalty: Number | None = Field(default=None, gt=0)
    repeat_penalty: Number | None = Field(default=None, gt=0)
    """llama.cpp's and Ollama's name for ``repetition_penalty``."""
    ignore_eos: StrictBool | None = None
    # OpenAI fields accepted only at values phi3 honours; see unsupported()
    n: StrictInt | None = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    # accepted and without effect on the answer
    metadata: Any = None
    store: Any = None
    service_tier: Any = None


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    echo: Any = None
    suffix: Any = None
    best_of: Any = None


def unsupported(request: _Sampling) -> tuple[str, str] | None:
    """The first parameter phi3 cannot honour, with why; None when every one can be."""
    fields = request.model_fields_set
    checks: list[tuple[str, bool, str]] = [
        ("n", request.n not in (None, 1), "phi3 generates one choice per request; send n=1 or repeat the request"),
        ("logprobs", request.logprobs not in (None, False, 0), "phi3 does not return log probabilities"),
        ("top_logprobs", request.top_logprobs not in (None, 0), "phi3 does not return log probabilities"),
        ("logit_bias", bool(request.logit_bias), "phi3 does not support logit_bias"),
        (
            "presence_penalty",
            request.presence_penalty not in (None, 0, 0.0),
            "phi3 has no presence penalty; use repetition_penalty",
        ),
        (
            "frequency_penalty",
            request.frequency_penalty not in (None, 0, 0.0),
            "phi3 has no frequency penalty; use repetition_penalty",
        ),
        ("functions", bool(request.functions), "functions is deprecated; send tools"),
        ("function_call", request.function_call not in (None, "none"), "function_call is deprecated; send tool_choice"),
    ]
    if isinstance(request, ChatCompletionRequest):
        checks += [
            ("modalities", request.modalities not in (None, ["text"]), "phi3 answers in text only"),
            ("audio", request.audio is not None, "phi3 answers in text only"),
            ("prediction", request.prediction is not None, "phi3 does not support predicted outputs"),
            ("reasoning_effort", request.reasoning_effort is not None, "Phi-3 is not a reasoning model"),
            ("web_search_options", request.web_search_options is not None, "phi3 does not search the web"),
        ]
    if isinstance(request, CompletionRequest):
        checks += [
            ("tools", request.tools is not None, "tools need /v1/chat/completions"),
            ("tool_choice", request.tool_choice is not None, "tools need /v1/chat/completions"),
            ("parallel_tool_calls", request.parallel_tool_calls is not None, "tools need /v1/chat/completions"),
            ("echo", bool(request.echo), "phi3 does not echo the prompt"),
            ("suffix", bool(request.suffix), "phi3 does not support suffix (fill-in-the-middle)"),
            ("best_of", request.best_of not in (None, 1), "phi3 generates one candidate per request"),
        ]
    for name, refused, why in checks:
        if name in fields and refused:
            return name, why
    return None


# -- response_format: structured output ---------------------------------------------------------


class JsonSchemaSpec(_Strict):
    """OpenAI's ``response_format.json_schema``. phi3 enforces ``schema`` with a grammar whether or
    not ``strict`` is set (there is no looser mode to fall back to)."""

    name: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


class RegexFormat(_Strict):
    """phi3's extension: ``{"type": "regex", "regex": PATTERN}``, the whole answer matches PATTERN."""

    type: Literal["regex"]
    regex: StrictStr = Field(min_length=1)


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat | RegexFormat, Field(discriminator="type")]
RESPONSE_FORMAT: TypeAdapter[ResponseFormat] = TypeAdapter(ResponseFormat)


def structured_options(response_format: Any) -> dict[str, Any]:
    """The :class:`phi3.GenerationConfig` fields a ``response_format`` asks for (``{}`` for text).

    Raises ``pydantic.ValidationError`` (locations relative to ``response_format``) when it is not
    one of :data:`ResponseFormat`.
    """
    if response_format is None:
        return {}
    chosen = RESPONSE_FORMAT.validate_python(response_format)
    if isinstance(chosen, JsonObjectFormat):
        return {"json_object": True}
    if isinstance(chosen, JsonSchemaFormat):
        return {"json_schema": chosen.json_schema.schema_}
    if isinstance(chosen, RegexFormat):
        return {"regex": chosen.regex}
    return {}


# -- responses ---------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    """Server-side timing of one generation, as phi3's engine measured it (llama.cpp's server sends
    the same ``timings`` object): lets a client tell engine speed from HTTP/SSE overhead."""

    prompt_n: int
    prompt_ms: float
    """Request start (slot granted) to the first generated token: prompt processing plus one step."""
    predicted_n: int
    predicted_ms: float
    """First to last generated token."""
    predicted_per_token_ms: float | None
    predicted_per_second: float | None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=lambda calls: calls is None)


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    timings: Timings | None = None


class FunctionDelta(BaseModel):
    name: str | None = Field(default=None, exclude_if=lambda name: name is None)
    arguments: str


class ToolCallDelta(BaseModel):
    """A streamed call, as OpenAI streams them: ``index``, ``id``, ``type`` and the function's name
    with empty arguments first, then the arguments (JSON text) under the same ``index``."""

    index: int
    id: str | None = Field(default=None, exclude_if=lambda value: value is None)
    type: Literal["function"] | None = Field(default=None, exclude_if=lambda value: value is None)
    function: FunctionDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = Field(default=None, exclude_if=lambda calls: calls is None)


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "phi3"
    loaded: bool = False
    backend: str | None = None
    engine: str | None = None
    device: str | None = None
    precision: str | None = None
    max_concurrent_generations: int | None = None
    # a LoRA adapter served as BASE:NAME (phi3 serve --adapter): the base model it runs on, as vLLM lists them
    parent: str | None = Field(default=None, exclude_if=lambda value: value is None)
    # the Ray runner (phi3 serve --ray): where this model runs, one entry per replica
    replicas: list[ReplicaCard] | None = Field(default=None, exclude_if=lambda value: value is None)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ReplicaCard(BaseModel):
    """One Ray Serve replica of a served model (``phi3 serve --ray``): which process on which node
    runs it, and what that node's auto selection picked (a mixed cluster runs one model on several
    devices)."""

    replica: str
    node: str
    host: str
    pid: int
    loaded: bool = False
    backend: str | None = None
    engine: str | None = None
    device: str | None = None
    precision: str | None = None
    max_concurrent_generations: int | None = None


ModelCard.model_rebuild()
