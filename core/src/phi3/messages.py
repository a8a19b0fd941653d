"""Chat messages checked before any template or backend sees them: one place for the rules.

A conversation is a list of ``{"role", "content"}`` mappings; besides the plain chat every Phi-3 template
renders (system / user / assistant with string content), the turns of a tool-calling conversation are
accepted (assistant ``tool_calls``, ``tool`` results with their ``tool_call_id``; :mod:`phi3.tools`
renders them). Text is checked for valid Unicode here, so no runtime's tokenizer meets a lone surrogate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from phi3.errors import ConfigError
from phi3.types import ChatMessage


def check_unicode(text: str, what: str) -> None:
    """A ``ConfigError`` naming the spot when ``text`` is not valid Unicode (a lone surrogate, as
    Python keeps undecodable bytes of argv or a JSON ``"\\ud800"``): every runtime's tokenizer
    fails on it, each with its own words. Checked before any backend sees the text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{what} is not valid Unicode: a lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}",
            hint="send valid UTF-8 text",
        ) from None


def has_tool_turns(messages: object) -> bool:
    """Whether ``messages`` hold a tool call or a tool result (rendered by :mod:`phi3.tools`)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return False
    return any(isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)


def check_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Copies of ``messages`` a template can render, or a one-line ``ConfigError``.

    Besides system/user/assistant turns with string ``content`` (the plain chat every Phi-3
    template renders), the turns of a tool-calling conversation are accepted (see
    :mod:`phi3.tools`, which renders them): an assistant turn with ``tool_calls`` (its ``content``
    may then be ``None``, kept as ``""``), a ``tool`` turn with the result and its
    ``tool_call_id``, and a system turn's ``tools`` text (what Phi-4-mini's own template lists).
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    checked: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ConfigError(f"message {i} must be a mapping with string 'role' and 'content', got {message!r}")
        role = message["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise ConfigError(f"message {i} has role {role!r}; use system, user, assistant or tool")
        content = message.get("content")
        calls = message.get("tool_calls") if role == "assistant" else None
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise ConfigError(f"message {i} must be a mapping with string 'role' and 'content', got {message!r}")
        check_unicode(content, f"message {i}'s content")
        turn: dict[str, Any] = {"role": role, "content": content}
        if calls:
            turn["tool_calls"] = check_tool_calls(i, calls)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ConfigError(f"message {i} (role tool) needs the 'tool_call_id' of the call it answers")
            turn["tool_call_id"] = call_id
        if isinstance(message.get("name"), str) and message["name"]:
            turn["name"] = message["name"]  # OpenAI's participant name: templates that have a place show it
        if role == "system" and message.get("tools") is not None:
            if not isinstance(message["tools"], str):
                raise ConfigError(f"message {i}: a system turn's 'tools' must be text (JSON), as its template reads it")
            turn["tools"] = message["tools"]
        checked.append(turn)
    return checked


def check_tool_calls(i: int, calls: object) -> list[dict[str, Any]]:
    """An assistant turn's ``tool_calls`` in OpenAI's shape, ``arguments`` as JSON text of an object."""
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ConfigError(f"message {i}: tool_calls must be a list of calls, got {type(calls).__name__}")
    checked = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(function, Mapping):
            raise ConfigError(
                f"message {i}: tool call {j} must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}"
            )
        name, arguments, call_id = function.get("name"), function.get("arguments", "{}"), call.get("id")
        if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
            raise ConfigError(f"message {i}: tool call {j} needs a string 'id' and function 'name'")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(dict(arguments), ensure_ascii=False)
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError(f"message {i}: tool call {j} ({name}) arguments must be a JSON object (text or dict)")
        checked.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return checked


__all__ = ["check_messages", "check_tool_calls", "check_unicode", "has_tool_turns"]
