"""OpenAI's Responses API as phi3 chat: request and response bodies, and the mapping between them.

A Responses request (``input`` as a string or items, ``instructions``, function ``tools``,
``text.format``, ``max_output_tokens``, ``previous_response_id`` ...) becomes the chat request the
chat route would get (:class:`~phi3.server.schemas.ChatCompletionRequest`), so defaults, validation,
tools and constrained decoding are exactly the chat path's (:mod:`~phi3.server.mapping`); a
parameter error names the Responses parameter (``max_output_tokens``, ``text.format``, ``input``).
The answer becomes a response object whose every field the OpenAI SDK's ``Response`` model has is
present (``null`` where the spec allows it), and streamed as the spec's events
(:func:`turn_events`). The routes are in :mod:`~phi3.server.responses_routes`, the stored
responses behind ``previous_response_id`` in :mod:`~phi3.server.responses_store`.

Items: ``message`` (roles ``user``, ``system``, ``developer`` = ``system``, ``assistant``, with
``input_text`` / ``output_text`` / ``refusal`` parts; ``phase`` and ``status`` are accepted),
``function_call`` and ``function_call_output`` (the tool round trip), and ``compaction`` items made by
``/v1/responses/compact``. Images, files and audio are a 400 naming the part: Phi-3 reads text.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from phi3.errors import Phi3Error
from phi3.model import Model, TextStream
from phi3.server import schemas
from phi3.server.errors import APIError, bad_request, from_phi3, unexpected
from phi3.server.mapping import RequestConfig, chat_messages, chat_tools, check_tools_supported, request_config
from phi3.server.responses_store import StoredResponse
from phi3.server.serving import CUT_SHORT, Server
from phi3.server.streaming import Generation
from phi3.server.validation import validation_error
from phi3.tools import MAX_PARALLEL_CALLS
from phi3.types import GenerationResult

Number = StrictInt | StrictFloat

COMPACTION_PREFIX = "phi3.compaction.v1."
"""``encrypted_content`` of phi3's compaction items: this prefix and the summary as base64url JSON
(not encrypted: a local server has nobody to hide the summary from; it is opaque to clients)."""
COMPACTION_MAX_TOKENS = 1024
COMPACTION_PROMPT = (
    "Summarize the conversation so far for your own later use: the facts, decisions, open questions and "
    "tool results needed to continue it. Be concise."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- request ------------------------------------------------------------------------------------


class TextFormatText(_Strict):
    type: Literal["text"]


class TextFormatJsonObject(_Strict):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")]


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(_Strict):
    """``POST /v1/responses`` (and a WebSocket ``response.create`` without its ``type``)."""

    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[Any] | None = None
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    tools: list[Any] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    max_tool_calls: StrictInt | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    previous_response_id: StrictStr | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    prompt_cache_retention: StrictStr | None = None
    service_tier: StrictStr | None = None
    include: list[StrictStr] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: StrictBool | None = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0)
    context_management: Any = None
    # phi3 extensions, as on /v1/chat/completions
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    top_k: StrictInt | None = None
    min_p: Number | None = None
    repetition_penalty: Number | None = None
    repeat_penalty: Number | None = None
    ignore_eos: StrictBool | None = None


class CompactRequest(_Strict):
    """``POST /v1/responses/compact``."""

    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[Any] | None = None
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    prompt_cache_retention: StrictStr | None = None
    service_tier: StrictStr | None = None


def unsupported(request: ResponsesRequest) -> tuple[str, str] | None:
    """The first parameter phi3 cannot honour, with why; None when every one can be."""
    reasoning = request.reasoning or {}
    include = request.include or []
    checks: list[tuple[str, bool, str]] = [
        ("background", bool(request.background), "phi3 answers in the foreground; leave background out"),
        ("conversation", request.conversation is not None, "phi3 keeps no conversations; use previous_response_id"),
        ("prompt", request.prompt is not None, "phi3 has no stored prompt templates; send input and instructions"),
        ("top_logprobs", bool(request.top_logprobs), "phi3 does not return log probabilities"),
        (
            "include",
            "message.output_text.logprobs" in include,
            "phi3 does not return log probabilities",
        ),
        (
            "reasoning",
            any(reasoning.get(key) not in (None, "none") for key in ("effort", "summary", "generate_summary")),
            "Phi-3 is not a reasoning model",
        ),
        (
            "truncation",
            request.truncation == "auto",
            "phi3 does not drop earlier items to fit the context; a conversation longer than the context is a "
            "400 (context_length_exceeded): compact it with /v1/responses/compact",
        ),
        (
            "text.verbosity",
            request.text is not None and request.text.verbosity not in (None, "medium"),
            "Phi-3 has no verbosity control",
        ),
        (
            "context_management",
            request.context_management is not None,
            "phi3 does not compact on its own; call /v1/responses/compact",
        ),
        (
            "max_tool_calls",
            request.max_tool_calls is not None and 1 < request.max_tool_calls < MAX_PARALLEL_CALLS,
            f"phi3 makes one call per answer (max_tool_calls 1) or up to {MAX_PARALLEL_CALLS}",
        ),
    ]
    for name, refused, why in checks:
        if refused:
            return name, why
    return None


# -- response -----------------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class FunctionCallItem(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = OutputMessage | FunctionCallItem


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class FunctionToolEcho(BaseModel):
    type: Literal["function"] = "function"
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool = True


class ReasoningEcho(BaseModel):
    effort: None = None
    summary: None = None


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """The response object: every field of the SDK's ``Response`` model that phi3 has a value for,
    ``null`` where the spec allows it."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "failed", "in_progress", "incomplete"]
    background: bool = False
    completed_at: int | None = None
    conversation: None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt: None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: ReasoningEcho = Field(default_factory=ReasoningEcho)
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}, "verbosity": "medium"})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[FunctionToolEcho] = Field(default_factory=list)
    top_logprobs: int = 0
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class InputText(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class UserMessageItem(BaseModel):
    """A user message kept verbatim in a compacted window."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user"] = "user"
    status: Literal["completed"] = "completed"
    content: list[InputText]


class CompactionItem(BaseModel):
    id: str
    type: Literal["compaction"] = "compaction"
    encrypted_content: str


class CompactedResponse(BaseModel):
    id: str
    object: Literal["response.compaction"] = "response.compaction"
    created_at: int
    output: list[UserMessageItem | CompactionItem]
    usage: ResponseUsage


# -- input items -> phi3 chat messages ---------------------------------------------------------

TEXT_PARTS = ("input_text", "output_text", "text")
NOT_TEXT = {"input_image": "image", "input_file": "file", "input_audio": "audio"}


def _field(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise bad_request(f"{where}.{key} must be a string", param="input")
    return value


def content_text(content: Any, where: str) -> str:
    """A message's content (a string, or a list of text parts) as one string; a 400 for anything else."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content parts", param="input")
    texts = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in NOT_TEXT:
            raise bad_request(
                f"{here}: {kind} parts are not supported: phi3 serves Phi-3 text models, which read text only; "
                "send input_text parts",
                param="input",
                code="unsupported_content",
            )
        if not isinstance(part, dict) or kind not in (*TEXT_PARTS, "refusal"):
            raise bad_request(
                f"{here}: content part type {kind!r} is not supported; send input_text parts", param="input"
            )
        texts.append(_field(part, "refusal" if kind == "refusal" else "text", here))
    return "".join(texts)


def _assistant(messages: list[dict[str, Any]], text: str | None = None, call: dict[str, Any] | None = None) -> None:
    """Add to the assistant turn being built (text then calls, as one turn), or start one."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and (call is not None or not last.get("tool_calls")):
        if text:
            last["content"] = (last.get("content") or "") + text
        if call is not None:
            last.setdefault("tool_calls", []).append(call)
        return
    turn: dict[str, Any] = {"role": "assistant", "content": text if text or call is None else None}
    if call is not None:
        turn["tool_calls"] = [call]
    messages.append(turn)


def encode_compaction(summary: str) -> str:
    data = json.dumps({"summary": summary}, ensure_ascii=False).encode()
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(data).decode("ascii")


def decode_compaction(content: Any, where: str) -> str:
    if isinstance(content, str) and content.startswith(COMPACTION_PREFIX):
        try:
            data = json.loads(base64.urlsafe_b64decode(content[len(COMPACTION_PREFIX) :].encode("ascii")))
        except (ValueError, binascii.Error, UnicodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("summary"), str):
            return str(data["summary"])
    raise bad_request(
        f"{where}.encrypted_content is not a compaction made by phi3 serve's /v1/responses/compact", param="input"
    )


def input_messages(items: str | list[Any] | None) -> list[dict[str, Any]]:
    """``input`` as phi3 chat messages; a 400 naming the item that cannot be read."""
    if items is None:
        return []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(raw, dict):
            raise bad_request(f"{where} must be an item object", param="input")
        kind = raw.get("type", "message" if "role" in raw else None)
        if kind == "message":
            role = raw.get("role")
            text = content_text(raw.get("content"), where)
            if role == "assistant":
                _assistant(messages, text=text)
            elif role in ("user", "system", "developer"):
                messages.append({"role": "system" if role == "developer" else role, "content": text})
            else:
                raise bad_request(f"{where}.role {role!r} is not one of user, system, developer, assistant", "input")
        elif kind == "function_call":
            call = {
                "id": _field(raw, "call_id", where),
                "type": "function",
                "function": {"name": _field(raw, "name", where), "arguments": _field(raw, "arguments", where)},
            }
            _assistant(messages, call=call)
        elif kind == "function_call_output":
            output = raw.get("output")
            text = output if isinstance(output, str) else content_text(output, where)
            messages.append({"role": "tool", "tool_call_id": _field(raw, "call_id", where), "content": text})
        elif kind == "compaction":
            summary = decode_compaction(raw.get("encrypted_content"), where)
            messages.append({"role": "system", "content": f"Summary of the conversation so far: {summary}"})
        else:
            raise bad_request(
                f"{where}: item type {kind!r} is not supported; phi3 takes message, function_call, "
                "function_call_output and compaction items",
                param="input",
            )
    return messages


# -- tools and formats -------------------------------------------------------------------------


def chat_tool(i: int, tool: Any) -> tuple[dict[str, Any], FunctionToolEcho]:
    """A Responses function tool as a chat tool, and how the response echoes it."""
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        raise bad_request(
            f"{where}: tool type {kind!r} is not supported; phi3 offers function tools only",
            param="tools",
            code="unsupported_parameter",
        )
    known = {"type", "name", "description", "parameters", "strict"}
    extra = sorted(set(tool) - known)
    if extra:
        raise bad_request(f"unrecognized request argument: {where}.{extra[0]}", param="tools", code="unknown_parameter")
    name = tool.get("name")
    if not isinstance(name, str):
        raise bad_request(f"{where}.name must be a string", param="tools")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    try:
        echo = FunctionToolEcho(
            name=name,
            description=tool.get("description"),
            parameters=tool.get("parameters"),
            strict=True if tool.get("strict") is None else tool["strict"],
        )
    except ValidationError as exc:
        raise bad_request(f"{where}: {exc.errors()[0]['msg']}", param="tools") from None
    return {"type": "function", "function": function}, echo


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request(
        f"tool_choice {json.dumps(choice)[:80]} is not supported; send auto, none, required or "
        '{"type": "function", "name": ...}',
        param="tool_choice",
        code="unsupported_parameter",
    )


def response_format(text: TextConfig | None) -> dict[str, Any] | None:
    chosen = text.format if text is not None else None
    if isinstance(chosen, TextFormatJsonSchema):
        spec = {"name": chosen.name, "schema": chosen.schema_, "strict": chosen.strict}
        if chosen.description is not None:
            spec["description"] = chosen.description
        return {"type": "json_schema", "json_schema": spec}
    if isinstance(chosen, TextFormatJsonObject):
        return {"type": "json_object"}
    return None


def text_echo(text: TextConfig | None) -> dict[str, Any]:
    chosen = text.format if text is not None else None
    shown: dict[str, Any] = {"type": "text"}
    if isinstance(chosen, TextFormatJsonSchema):
        shown = chosen.model_dump(by_alias=True)
        shown["strict"] = True if chosen.strict is None else chosen.strict
    elif chosen is not None:
        shown = chosen.model_dump()
    return {"format": shown, "verbosity": "medium"}


RENAMED = {"max_completion_tokens": "max_output_tokens", "response_format": "text.format", "messages": "input"}


def as_responses_error(exc: APIError) -> APIError:
    """A chat-path error named with the Responses parameters."""
    param = exc.param
    for chat, ours in RENAMED.items():
        if param is not None and (param == chat or param.startswith((f"{chat}.", f"{chat}["))):
            param = ours
    message = exc.message
    for chat, ours in RENAMED.items():
        if chat != "messages":
            message = message.replace(chat, ours)
    renamed = APIError(exc.status, message, type=exc.type, param=param, code=exc.code, headers=exc.headers)
    return renamed


def previous_not_found(response_id: str) -> APIError:
    return APIError(
        400,
        f"previous response with id {response_id!r} not found: it was never stored (store: false), was evicted "
        "from the server's bounded store, or the server restarted; send the whole conversation as input",
        param="previous_response_id",
        code="previous_response_not_found",
    )


# -- one turn ----------------------------------------------------------------------------------


@dataclass
class Turn:
    """One response being made: the request mapped onto phi3, and what the response echoes."""

    request: ResponsesRequest
    plan: RequestConfig
    messages: list[dict[str, Any]]
    """What the model reads: instructions, the previous conversation, this input."""
    history: list[dict[str, Any]]
    """The conversation without instructions (stored for the next turn, with this turn's output)."""
    tool_options: dict[str, Any]
    tools: list[FunctionToolEcho]
    response_id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=schemas.now)
    temperature: float | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        request = self.request
        self.temperature = float(request.temperature) if request.temperature is not None else 1.0
        self.top_p = float(request.top_p) if request.top_p is not None else 1.0

    async def start(self, server: Server, disconnected: Callable[[], Awaitable[bool]] | None) -> Generation:
        """Queue and start the generation on the shared server, as the chat route does."""

        def open_stream(model: Model) -> TextStream:
            config = self.plan.for_model(model)
            self.temperature = config.temperature if config.do_sample else 0.0
            self.top_p = config.top_p if config.do_sample else 1.0
            return model.chat_stream(self.messages, config, **self.tool_options)

        try:
            return await server.start_generation(
                self.request.model, open_stream, disconnected, check_tools_supported(self.plan, self.tool_options)
            )
        except APIError as exc:
            raise as_responses_error(exc) from None

    def response(
        self,
        status: Literal["completed", "failed", "in_progress", "incomplete"],
        output: Sequence[OutputItem] = (),
        usage: ResponseUsage | None = None,
        error: ResponseError | None = None,
    ) -> ResponseObject:
        request = self.request
        tool_choice = request.tool_choice if request.tool_choice is not None else "auto"
        return ResponseObject(
            id=self.response_id,
            created_at=self.created_at,
            status=status,
            completed_at=schemas.now() if status in ("completed", "incomplete") else None,
            error=error,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            instructions=request.instructions,
            max_output_tokens=request.max_output_tokens,
            max_tool_calls=request.max_tool_calls,
            metadata=dict(request.metadata or {}),
            model=request.model,
            output=list(output),
            parallel_tool_calls=bool(self.tool_options.get("parallel_tool_calls", True)),
            previous_response_id=request.previous_response_id,
            prompt_cache_key=request.prompt_cache_key,
            prompt_cache_retention=request.prompt_cache_retention,
            safety_identifier=request.safety_identifier,
            store=request.store is not False,
            temperature=self.temperature,
            text=text_echo(request.text),
            tool_choice=tool_choice,
            tools=self.tools,
            top_p=self.top_p,
            usage=usage,
            user=request.user,
        )

    def finish(self, text: str, result: GenerationResult, message_id: str, with_message: bool) -> ResponseObject:
        """The finished response: a message item (when the model said something, or called nothing),
        then one ``function_call`` item per call."""
        incomplete = result.finish_reason == "length"
        item_status: Literal["completed", "incomplete"] = "incomplete" if incomplete else "completed"
        output: list[OutputItem] = []
        if with_message or text or not result.tool_calls:
            output.append(OutputMessage(id=message_id, status=item_status, content=[OutputText(text=text)]))
        for call in result.tool_calls:
            output.append(
                FunctionCallItem(
                    id=new_id("fc"),
                    call_id=call.id,
                    name=call.name,
                    arguments=json.dumps(dict(call.arguments), ensure_ascii=False),
                    status="completed",
                )
            )
        usage = ResponseUsage(
            input_tokens=result.prompt_tokens,
            output_tokens=result.new_tokens,
            total_tokens=result.prompt_tokens + result.new_tokens,
        )
        return self.response("incomplete" if incomplete else "completed", output, usage)

    def stored(self, response: ResponseObject) -> StoredResponse:
        """The response with the conversation through its output, for ``previous_response_id``."""
        history = list(self.history)
        for item in response.output:
            if isinstance(item, OutputMessage):
                _assistant(history, text="".join(part.text for part in item.content))
            else:
                function = {"name": item.name, "arguments": item.arguments}
                call = {"id": item.call_id, "type": "function", "function": function}
                _assistant(history, call=call)
        return StoredResponse.of(response.model_dump(), history)


def new_id(prefix: str) -> str:
    return schemas.new_id(prefix).replace("-", "_", 1)


def prepare(request: ResponsesRequest, find: Callable[[str], StoredResponse | None]) -> Turn:
    """The request as a :class:`Turn`; a 400 naming the parameter when it cannot be honoured."""
    refused = unsupported(request)
    if refused is not None:
        name, why = refused
        raise bad_request(f"{name} is not supported: {why}", param=name, code="unsupported_parameter")
    previous: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        stored = find(request.previous_response_id)
        if stored is None:
            raise previous_not_found(request.previous_response_id)
        previous = [dict(message) for message in stored.history]
    history = previous + input_messages(request.input)
    if not history:
        raise bad_request("input is required: a string or a list of items", param="input")
    instructions = [{"role": "system", "content": request.instructions}] if request.instructions else []
    converted = [chat_tool(i, tool) for i, tool in enumerate(request.tools or [])]
    body: dict[str, Any] = {
        "model": request.model,
        "messages": instructions + history,
        "max_completion_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "stop": request.stop,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repetition_penalty": request.repetition_penalty,
        "repeat_penalty": request.repeat_penalty,
        "ignore_eos": request.ignore_eos,
        "tools": [tool for tool, _ in converted] if request.tools is not None else None,
        "tool_choice": chat_tool_choice(request.tool_choice),
        "parallel_tool_calls": False if request.max_tool_calls == 1 else request.parallel_tool_calls,
        "response_format": response_format(request.text),
    }
    try:
        chat = schemas.ChatCompletionRequest.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        raise as_responses_error(validation_error(exc.errors())) from None
    try:
        plan = request_config(chat)
        messages = chat_messages(chat)
        tool_options = chat_tools(chat)
    except APIError as exc:
        raise as_responses_error(exc) from None
    return Turn(request, plan, messages, history, tool_options, [echo for _, echo in converted])


# -- streamed events ---------------------------------------------------------------------------


def stream_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, Phi3Error):
        return from_phi3(exc)
    return unexpected(exc)


async def _chain(first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first is None:
        return
    yield first
    async for piece in rest:
        yield piece


async def turn_events(
    turn: Turn,
    generation: Generation,
    first: str | None,
    pieces: AsyncIterator[str],
    keep: Callable[[Turn, ResponseObject], None],
) -> AsyncIterator[dict[str, Any]]:
    """The spec's events for one streamed response, without ``sequence_number`` (see :func:`numbered`):
    ``response.created``, ``response.in_progress``, the message item (``output_item.added``,
    ``content_part.added``, ``output_text.delta`` ..., ``output_text.done``, ``content_part.done``,
    ``output_item.done``), each function call (``output_item.added``, ``function_call_arguments.delta``
    and ``.done``, ``output_item.done``), then ``response.completed`` (``response.incomplete`` when cut
    by ``max_output_tokens``), or ``response.failed`` when the answer did not complete. ``keep`` gets
    the finished response (to store it). The generation is cancelled whatever happens."""
    message_id = new_id("msg")
    opened = False

    def opening() -> list[dict[str, Any]]:
        empty = OutputMessage(id=message_id, status="in_progress", content=[])
        where = {"item_id": message_id, "output_index": 0, "content_index": 0}
        return [
            {"type": "response.output_item.added", "output_index": 0, "item": empty.model_dump()},
            {"type": "response.content_part.added", **where, "part": OutputText(text="").model_dump()},
        ]

    try:
        yield {"type": "response.created", "response": turn.response("in_progress").model_dump()}
        yield {"type": "response.in_progress", "response": turn.response("in_progress").model_dump()}
        parts: list[str] = []
        async for piece in _chain(first, pieces):
            if not opened:
                opened = True
                for event in opening():
                    yield event
            parts.append(piece)
            yield {
                "type": "response.output_text.delta",
                "item_id": message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            }
        result = generation.result
        if result is None:
            raise CUT_SHORT
        final = turn.finish("".join(parts), result, message_id, with_message=opened)
        for index, item in enumerate(final.output):
            if isinstance(item, OutputMessage):
                if not opened:
                    for event in opening():
                        yield event
                part = item.content[0]
                where = {"item_id": message_id, "output_index": index, "content_index": 0}
                yield {"type": "response.output_text.done", **where, "text": part.text, "logprobs": []}
                yield {"type": "response.content_part.done", **where, "part": part.model_dump()}
            else:
                started = item.model_copy(update={"arguments": "", "status": "in_progress"})
                yield {"type": "response.output_item.added", "output_index": index, "item": started.model_dump()}
                where = {"item_id": item.id, "output_index": index}
                yield {"type": "response.function_call_arguments.delta", **where, "delta": item.arguments}
                yield {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "name": item.name,
                    "arguments": item.arguments,
                }
            yield {"type": "response.output_item.done", "output_index": index, "item": item.model_dump()}
        keep(turn, final)
        kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
        yield {"type": kind, "response": final.model_dump()}
    except Exception as exc:
        error = stream_error(exc)
        failed = turn.response("failed", error=ResponseError(code="server_error", message=error.message))
        yield {"type": "response.failed", "response": failed.model_dump()}
    finally:
        generation.cancel()


async def numbered(
    events: AsyncIterator[dict[str, Any]], extra: Mapping[str, Any] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Each event with its ``sequence_number`` (0, 1, ... in the order sent)."""
    number = 0
    async for event in events:
        yield {**event, "sequence_number": number, **(extra or {})}
        number += 1


def sse_frame(event: Mapping[str, Any]) -> bytes:
    """One event as SSE: its type on an ``event:`` line, one ``data:`` JSON line, lines split by ``\\n``."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


__all__ = [
    "CompactRequest",
    "CompactedResponse",
    "ResponseObject",
    "ResponsesRequest",
    "Turn",
    "input_messages",
    "numbered",
    "prepare",
    "previous_not_found",
    "sse_frame",
    "turn_events",
]
