"""The line protocol between the npu-library engine (parent) and its worker process.

One JSON object per line. The parent writes requests to the worker's stdin; the worker writes
events to its original stdout, which it keeps for this protocol only (it points its own fd 1 at
stderr first, so the library's ``print`` calls and C++ output cannot corrupt the stream).

Requests (``op``): ``generate`` {id, prompt, config}, ``cancel`` {id}, ``chat_template``
{messages, tools?}, ``logits`` {ids}, ``close``.
Events (``event``): ``ready`` {device, context_length, ...}, ``start`` {id, prompt_tokens,
max_new_tokens}, ``tokens`` {id, ids, text}, ``end`` {id}, ``template`` {text}, ``logits``
{values}, ``error`` {kind, message, hint}.

Error kinds map to the phi3 errors the parent raises, so a too-long prompt or a damaged artifact
reads the same as with any other backend.
"""

from __future__ import annotations

import json
from typing import IO, Any

from phi3.errors import (
    ArtifactError,
    BackendError,
    ConfigError,
    DeviceNotFoundError,
    Phi3Error,
    PromptTooLongError,
)

ERRORS: dict[str, type[Phi3Error]] = {
    "artifact": ArtifactError,
    "config": ConfigError,
    "device": DeviceNotFoundError,
    "prompt_too_long": PromptTooLongError,
    "internal": BackendError,
}


def send(stream: IO[str], message: dict[str, Any]) -> None:
    """Write one message as a line and flush (the other side blocks on it)."""
    stream.write(json.dumps(message, ensure_ascii=True) + "\n")
    stream.flush()


def decode(line: str) -> dict[str, Any]:
    """Parse one line; a line that is not a JSON object is a protocol error."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"not a protocol message: {line[:200]!r}")
    return message


def error_event(kind: str, message: str, hint: str | None = None) -> dict[str, Any]:
    return {"event": "error", "kind": kind, "message": message, "hint": hint}


def to_exception(event: dict[str, Any]) -> Phi3Error:
    """The phi3 error an ``error`` event stands for."""
    cls = ERRORS.get(str(event.get("kind")), BackendError)
    message = str(event.get("message") or "the npu-library worker failed")
    return cls(message, hint=event.get("hint") or None)


__all__ = ["ERRORS", "decode", "error_event", "send", "to_exception"]
