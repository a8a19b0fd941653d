"""Tool calling: OpenAI's function tools on every Phi-3 family model, arguments valid by construction.

``Model.chat(messages, tools=[...], tool_choice=...)`` returns the calls as :class:`phi3.ToolCall`
(name, arguments as a dict, a generated id) with ``finish_reason="tool_calls"``. Every call's
``arguments`` are decoded under a JSON-Schema constraint built from the tool's ``parameters``
(structured output, see :mod:`phi3.structured_output`), so they validate; phi3 re-checks them with
``jsonschema`` anyway and treats a failure as a backend bug. Offering tools therefore needs a
backend that enforces ``json_schema`` output (``UnsupportedError`` otherwise).

Two formats, chosen by what the model's own chat template does (probed once per model):

**native** (Phi-4-mini): its template lists a system turn's ``tools`` (JSON text) between
``<|tool|>`` and ``<|/tool|>``, and the model answers a call with
``<|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>`` (Microsoft's model card; the
same format llama.cpp, vLLM and Ollama parse). phi3 puts the tools in the first system turn
(adding ``NATIVE_SYSTEM`` when there is none) and renders with the model's own template.

- ``required`` / a named function: the prompt ends with ``<|tool_call|>`` and decoding is
  constrained to the JSON list of calls.
- ``auto``: the model first decodes freely (that text streams) and is stopped at ``<|tool_call|>``;
  if it got there, a second decode continues after the marker, constrained to the list of calls.
  This is llama.cpp's "lazy grammar" (free text until a trigger, a grammar from the trigger on)
  done as two decodes, because phi3's constraint kinds (JSON Schema, regex) cannot say "free text,
  or the marker then JSON". The second decode re-reads the prompt (no KV cache is shared).

**constrained** (Phi-3, Phi-3.5: templates without tools): phi3 describes the tools in the system
turn (:func:`generic_prompt`) and constrains the whole answer to one JSON object, llama.cpp's
"generic" tool format: ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``, or with ``auto``
also ``{"response": "..."}`` (the answer in words, returned as ``text``).

History: an assistant turn's ``tool_calls`` are rendered the way the model would have written
them (native: ``<|tool_call|>[...]<|/tool_call|>`` after its content; constrained: the
``{"tool_calls": [...]}`` object), and a ``tool`` turn is left to the model's template (native;
Phi-4-mini's renders it as ``<|tool|>result<|end|>``) or becomes a user turn holding
``{"tool_response": {"tool_call_id", "name", "content"}}`` (constrained: Phi-3's template drops
unknown roles), as llama.cpp's template polyfills do.

``tool_choice="none"``: the tools are not shown and the answer is plain text (no constraint from
phi3; the config's own structured-output fields apply). Streaming: text the model says streams as
it decodes (native ``auto``: the text before a call; constrained ``auto``: the ``response``, in
one piece once the JSON object is complete); calls are delivered at the end, in
``stream.result.tool_calls``. Stop strings apply to that text only, never inside the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from phi3 import structured_output
from phi3.decoding import GenerationSlot, ModelCore, Passes
from phi3.errors import BackendError, ConfigError, UnsupportedError
from phi3.generation_config import GenerationConfig, find_stop
from phi3.types import FinishReason, GenerationResult, ToolCall

TOOL_CALL_START = "<|tool_call|>"
TOOL_CALL_END = "<|/tool_call|>"
"""Phi-4-mini's markers around the JSON list of calls it makes."""

NATIVE_SYSTEM = "You are a helpful assistant with some tools."
"""The system turn phi3 adds for the native format when the messages have none (Phi-4-mini's
template lists tools only inside a system turn); the wording of Microsoft's model card example."""

MAX_PARALLEL_CALLS = 4
"""Most calls in one answer when ``parallel_tool_calls`` is on (a bound, so a decode ends)."""

ChoiceMode = Literal["auto", "none", "required", "function"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_PROBE = '["phi3-tool-format-probe"]'
"""What the template probe puts in a system turn's ``tools``: JSON text, as real tools are (ONNX Runtime
GenAI 0.18.0 parses that field and fails on anything else), in the one spelling every JSON writer keeps."""
_native_models: weakref.WeakKeyDictionary[ModelCore, bool] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Tool:
    """One checked function tool."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    """The JSON Schema of its arguments object."""

    def listed(self) -> dict[str, Any]:
        """How the model is shown the tool: name, description and parameters (Phi-4-mini's format)."""
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}

    def call_schema(self) -> dict[str, Any]:
        """A call of this tool, ``{"name": ..., "arguments": {...}}``, as a JSON Schema."""
        return {
            "type": "object",
            "properties": {"name": {"const": self.name}, "arguments": dict(self.parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }


@dataclass(frozen=True)
class ToolRequest:
    """What a chat asks of tools, checked: the tools, the choice and whether calls may be parallel."""

    tools: tuple[Tool, ...]
    choice: ChoiceMode
    function: str | None = None
    """The function a named ``tool_choice`` forces (``choice="function"``)."""
    parallel: bool = True

    @property
    def offered(self) -> tuple[Tool, ...]:
        """The tools shown to the model (none with ``tool_choice="none"``)."""
        return () if self.choice == "none" else self.tools

    @property
    def callable(self) -> tuple[Tool, ...]:
        """The tools a call may name."""
        return tuple(t for t in self.tools if t.name == self.function) if self.function else self.tools

    @property
    def max_calls(self) -> int:
        return MAX_PARALLEL_CALLS if self.parallel and self.function is None else 1

    def calls_schema(self) -> dict[str, Any]:
        """The JSON list of calls (Phi-4-mini's payload between its markers) as a JSON Schema."""
        items = [tool.call_schema() for tool in self.callable]
        return {
            "type": "array",
            "items": items[0] if len(items) == 1 else {"anyOf": items},
            "minItems": 1,
            "maxItems": self.max_calls,
        }

    def generic_schema(self) -> dict[str, Any]:
        """The constrained format's answer: ``{"tool_calls": [...]}``, or with ``auto`` also
        ``{"response": "..."}``."""
        calls = {
            "type": "object",
            "properties": {"tool_calls": self.calls_schema()},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
        if self.choice != "auto":
            return calls
        response = {
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
            "additionalProperties": False,
        }
        return {"anyOf": [calls, response]}


# -- checking what the caller gave -----------------------------------------------------------------


def check_tools(tools: object) -> tuple[Tool, ...]:
    """OpenAI function-tool definitions, checked; a one-line ``ConfigError`` naming the tool and field."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ConfigError(
            f"tools must be a list of tool definitions, got {type(tools).__name__}",
            hint="send [{'type': 'function', 'function': {'name': ..., 'parameters': {...}}}]",
        )
    if not tools:
        raise ConfigError("tools is an empty list; leave it out or define at least one function")
    checked: list[Tool] = []
    for i, tool in enumerate(tools):
        checked.append(_check_tool(i, tool, {t.name for t in checked}))
    return tuple(checked)


def _check_tool(i: int, tool: object, seen: set[str]) -> Tool:
    if not isinstance(tool, Mapping):
        raise ConfigError(f"tools[{i}] must be a mapping {{'type': 'function', 'function': {{...}}}}, got {tool!r}")
    function = tool.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    label = f"tools[{i}] ({name})" if isinstance(name, str) and name else f"tools[{i}]"
    if tool.get("type") != "function":
        raise ConfigError(f"{label}: type must be 'function', got {tool.get('type')!r}")
    if not isinstance(function, Mapping):
        raise ConfigError(f"{label}: 'function' must be a mapping with name, description and parameters")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{label}: function.name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    if name in seen:
        raise ConfigError(f"{label}: function.name {name!r} is defined twice; tool names must be unique")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{label}: function.description must be text, got {type(description).__name__}")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ConfigError(f"{label}: function.strict must be true or false, got {strict!r}")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = _NO_PARAMETERS  # OpenAI: a function without parameters takes none
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"{label}: function.parameters must be a JSON Schema object, got {type(parameters).__name__}")
    if "type" not in parameters:  # e.g. {} (clients send it for "any arguments"): arguments are an object
        parameters = {"type": "object", **parameters}
    text = structured_output.schema_text(parameters)
    problems = structured_output.problems(text, False, None)
    if problems:
        raise ConfigError(f"{label}: function.parameters: {problems[0].removeprefix('json_schema ')}")
    if parameters.get("type") != "object":
        raise ConfigError(
            f"{label}: function.parameters must describe the arguments object ('type': 'object'), "
            f"got type {parameters.get('type')!r}"
        )
    return Tool(name, description, json.loads(text))


def check_request(tools: object, tool_choice: object, parallel_tool_calls: object = True) -> ToolRequest:
    """``tools`` / ``tool_choice`` / ``parallel_tool_calls`` as OpenAI defines them, checked."""
    checked = check_tools(tools) if tools is not None else ()
    if not isinstance(parallel_tool_calls, bool):
        raise ConfigError(f"parallel_tool_calls must be true or false, got {parallel_tool_calls!r}")
    usage = "use 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}"
    if tool_choice is None:
        return ToolRequest(checked, "auto" if checked else "none", parallel=parallel_tool_calls)
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ConfigError(f"tool_choice {tool_choice!r} is not a choice; {usage}")
        if tool_choice != "none" and not checked:
            raise ConfigError(f"tool_choice {tool_choice!r} needs tools; give tools=[...]")
        mode: ChoiceMode = "auto" if tool_choice == "auto" else "required" if tool_choice == "required" else "none"
        return ToolRequest(checked, mode, parallel=parallel_tool_calls)
    function = tool_choice.get("function") if isinstance(tool_choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") != "function" or not isinstance(name, str):
        raise ConfigError(f"tool_choice {tool_choice!r} is not a choice; {usage}")
    names = [tool.name for tool in checked]
    if name not in names:
        raise ConfigError(f"tool_choice names function {name!r}, which is not in tools ({', '.join(names) or 'none'})")
    return ToolRequest(checked, "function", function=name, parallel=parallel_tool_calls)


# -- the two formats -------------------------------------------------------------------------------


def native_format(model: ModelCore) -> bool:
    """Whether ``model``'s own template lists a system turn's ``tools`` between ``<|tool|>`` and
    ``<|/tool|>`` (Phi-4-mini); probed by rendering once, so it holds on every backend."""
    known = _native_models.get(model)
    if known is None:
        probe = [{"role": "system", "content": "", "tools": _PROBE}, {"role": "user", "content": "?"}]
        known = f"<|tool|>{_PROBE}<|/tool|>" in model.apply_chat_template(probe)
        _native_models[model] = known
    return known


def _calls(turn: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}
        for call in turn.get("tool_calls") or ()
    ]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def native_messages(messages: Sequence[Mapping[str, Any]], request: ToolRequest) -> list[dict[str, Any]]:
    """Checked messages as Phi-4-mini's template takes them: tools in the first system turn, past
    calls in its own markup."""
    listed = _dumps([tool.listed() for tool in request.offered]) if request.offered else None
    out: list[dict[str, Any]] = []
    for message in messages:
        turn = {key: value for key, value in message.items() if key != "tool_calls"}
        if turn["role"] == "system" and listed is not None and not any(m["role"] == "system" for m in out):
            turn["tools"] = listed
        if message.get("tool_calls"):
            turn["content"] = f"{turn['content']}{TOOL_CALL_START}{_dumps(_calls(message))}{TOOL_CALL_END}"
        out.append(turn)
    if listed is not None and not any(turn["role"] == "system" for turn in out):
        out.insert(0, {"role": "system", "content": NATIVE_SYSTEM, "tools": listed})
    return out


def generic_prompt(request: ToolRequest) -> str:
    """What phi3 tells a model without a native tool format (added to the system turn)."""
    tools = _dumps([tool.listed() for tool in request.offered])
    calls = '{"tool_calls": [{"name": <tool name>, "arguments": {<arguments>}}]}'
    if request.choice == "auto":
        answer = f'either {calls} to call tools, or {{"response": "<your answer>"}} to answer directly'
    elif request.function is not None:
        answer = f"{calls} calling the tool {request.function}"
    else:
        answer = f"{calls} calling one or more of the tools"
    return (
        f"You can call tools. The tools, each with the JSON Schema of its arguments: {tools}\n"
        f"Answer with one JSON object only: {answer}."
    )


def generic_messages(messages: Sequence[Mapping[str, Any]], request: ToolRequest) -> list[dict[str, Any]]:
    """Checked messages for a template without tools: the tools described in the system turn, past
    calls as the JSON the model answered, tool results as user turns."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if message.get("tool_calls"):
            names.update({call["id"]: call["function"]["name"] for call in message["tool_calls"]})
            calls = _dumps({"tool_calls": _calls(message)})
            out.append({"role": "assistant", "content": f"{content}\n{calls}" if content else calls})
        elif role == "tool":
            call_id = message["tool_call_id"]
            result = {"tool_call_id": call_id, "name": names.get(call_id), "content": content}
            out.append({"role": "user", "content": _dumps({"tool_response": result})})
        else:
            out.append({"role": role, "content": content})
    if request.offered:
        prompt = generic_prompt(request)
        if out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{prompt}" if out[0]["content"] else prompt
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


_RESPONSE_OPENING = re.compile(r'\s*\{\s*"response"\s*:\s*"')


def cut_response(text: str) -> str:
    """The words of a constrained answer cut by ``max_new_tokens``: the decoded part of its
    ``"response"`` string, or ``""`` when the cut JSON was a tool call (never the JSON itself)."""
    opening = _RESPONSE_OPENING.match(text)
    if opening is None:
        return ""
    try:
        return str(json.decoder.scanstring(text, opening.end())[0])  # type: ignore[attr-defined]
    except ValueError:  # unterminated: the cut fell inside the string
        body = text[opening.end() :]
    for trim in range(min(len(body), 6) + 1):  # a cut escape (\u00e, a lone \) is dropped
        try:
            return str(json.loads('"' + body[: len(body) - trim] + '"'))
        except ValueError:
            continue
    return ""


def new_call_id() -> str:
    """A fresh call id in OpenAI's style."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_calls(model: ModelCore, request: ToolRequest, calls: object) -> tuple[ToolCall, ...]:
    """Parsed calls as ToolCalls, each checked against its tool (a failure is a backend bug: the
    decode was constrained to exactly this)."""
    import jsonschema

    tools = {tool.name: tool for tool in request.callable}
    found: list[ToolCall] = []
    for call in calls if isinstance(calls, list) else [calls]:
        tool = tools.get(str(call.get("name"))) if isinstance(call, dict) else None
        try:
            if tool is None or not isinstance(call, dict):
                raise ValueError(f"{call!r} names no tool it was offered")
            jsonschema.validate(call, tool.call_schema())
        except (ValueError, jsonschema.ValidationError) as exc:
            raise BackendError(
                f"backend {model.backend!r} broke the tool-call constraint: {str(exc).splitlines()[0]}",
                hint="this is a bug in the backend's structured output; report it",
            ) from None
        found.append(ToolCall(new_call_id(), tool.name, dict(call["arguments"])))
    return tuple(found)


# -- decoding --------------------------------------------------------------------------------------


def check_supported(model: ModelCore, request: ToolRequest, config: GenerationConfig) -> None:
    """The rules for a chat with tools on ``model``, before anything is rendered or decoded (the
    one place they are written; ``phi3 serve`` calls it too, for its 400s).

    With ``tool_choice="none"`` the config's own constraint applies (:meth:`ModelCore.check_supported`).
    Otherwise the calls are decoded under a JSON-Schema constraint, so the config may carry no
    constraint of its own (``ConfigError``) and the backend must enforce ``json_schema``
    (``UnsupportedError``).
    """
    if request.choice == "none":
        model.check_supported(config)
        return
    if config.output_constraint is not None:
        raise ConfigError(
            f"tools cannot be combined with {config.output_constraint.kind} output: a tool call is "
            "constrained to the tool's parameters",
            hint="drop json_schema/json_object/regex, or send tool_choice='none'",
        )
    if "json_schema" not in model.structured_output:
        raise UnsupportedError(
            f"backend {model.backend!r} (engine {model.engine!r} on {model.device}) cannot enforce "
            "json_schema output, which tool calling needs to keep arguments valid",
            hint="choose a backend whose `phi3 list-backends` entry lists json_schema, or send tool_choice='none'",
        )


def decode_calls(prompt: str, config: GenerationConfig, request: ToolRequest, native: bool) -> Passes:
    """The decodes of a chat offering tools (``prompt`` rendered with them), for
    :meth:`ModelCore.stream_passes`: they yield what the model says and return the result, whose
    ``tool_calls`` hold its calls. All run in one generation slot (native ``auto`` runs two), so no
    other stream runs on the model in between. A JSON decode yields nothing until it ends."""

    def passes(slot: GenerationSlot) -> Generator[str, None, GenerationResult]:
        calls = _ToolDecodes(slot, prompt, config, request)
        result = yield from (calls.native() if native else calls.generic())
        return result

    return passes


class _ToolDecodes:
    """The decodes of one chat with tools, in one held generation slot."""

    def __init__(self, slot: GenerationSlot, prompt: str, config: GenerationConfig, request: ToolRequest) -> None:
        self._slot = slot
        self._model = slot.model
        self._prompt = prompt
        self._config = config
        self._request = request

    def _json(self, prompt: str, schema: Mapping[str, Any], max_new_tokens: int) -> GenerationResult:
        """A decode constrained to ``schema`` (no stop strings: they must not cut the JSON)."""
        config = self._config.replace(max_new_tokens=max_new_tokens, stop=(), ignore_eos=False, json_schema=schema)
        stream = self._slot.stream(prompt, config)
        for _ in stream:
            pass
        return stream.result

    def native(self) -> Generator[str, None, GenerationResult]:
        request, config = self._request, self._config
        text, budget = "", config.max_new_tokens
        if request.choice == "auto":
            free = self._slot.stream(self._prompt, config.replace(stop=(*config.stop, TOOL_CALL_START)))
            yield from free
            if free.stopped_by != TOOL_CALL_START:
                return self._finish(free.result.text, (), free.result.finish_reason)
            text, budget = free.result.text, budget - free.new_tokens
            if budget < 1:
                return self._finish(text, (), "length")
        answer = self._json(self._prompt + text + TOOL_CALL_START, request.calls_schema(), budget)
        if answer.finish_reason == "length":  # cut inside the JSON: no call can be made of it
            return self._finish(text, (), "length")
        return self._finish(text, _tool_calls(self._model, request, json.loads(answer.text)), "tool_calls")

    def generic(self) -> Generator[str, None, GenerationResult]:
        answer = self._json(self._prompt, self._request.generic_schema(), self._config.max_new_tokens)
        if answer.finish_reason == "length":
            # the JSON was cut: no call can be made of it, and its raw text is not an answer. What the
            # model had said in words (an unfinished {"response": ...}) is returned; a cut call, nothing
            text = cut_response(answer.text)
            if text:
                yield text
            return self._finish(text, (), "length")
        data = json.loads(answer.text)
        if "tool_calls" in data:
            return self._finish("", _tool_calls(self._model, self._request, data["tool_calls"]), "tool_calls")
        text, finish = str(data["response"]), answer.finish_reason
        cut = find_stop(text, self._config.stop)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        if text:
            yield text
        return self._finish(text, (), finish)

    def _finish(self, text: str, calls: tuple[ToolCall, ...], finish: FinishReason) -> GenerationResult:
        """One result for the whole chat: its text and calls, every pass's tokens and time."""
        results = [stream.result for stream in self._slot.passes]
        decode_s = sum((r.new_tokens - 1) / r.decode_tokens_per_s for r in results if r.decode_tokens_per_s > 0)
        decoded = sum(r.new_tokens - 1 for r in results if r.decode_tokens_per_s > 0)
        return dataclasses.replace(
            results[0],
            text=text,
            token_ids=tuple(token for r in results for token in r.token_ids),
            finish_reason=finish,
            decode_tokens_per_s=decoded / decode_s if decode_s > 0 else 0.0,
            total_s=sum(r.total_s for r in results),
            tool_calls=calls,
        )


__all__ = [
    "MAX_PARALLEL_CALLS",
    "NATIVE_SYSTEM",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "Tool",
    "ToolRequest",
    "check_request",
    "check_supported",
    "check_tools",
    "cut_response",
    "decode_calls",
    "generic_messages",
    "generic_prompt",
    "native_format",
    "native_messages",
    "new_call_id",
]
