"""``phi3.Model``: a loaded model, the API :func:`phi3.load` returns.

The primitives (raw ``stream`` / ``generate``, generation slots, the chat template, ``check_supported``,
``close``) are :class:`phi3.decoding.ModelCore`'s; ``Model`` adds ``chat`` and ``chat_stream``, which
:mod:`phi3.chat` orchestrates (plain chat, or chat with tools through :mod:`phi3.tools`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from phi3 import chat
from phi3.decoding import ModelCore, TextStream
from phi3.generation_config import GenerationConfig, coerce_config
from phi3.types import ChatMessage, GenerationResult


class Model(ModelCore):
    """A Phi-3 model loaded on one backend/engine/device. Create it with :func:`phi3.load`."""

    def chat_stream(
        self,
        messages: Sequence[ChatMessage],
        config: GenerationConfig | Mapping[str, Any] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = True,
        **options: Any,
    ) -> TextStream:
        """Like :meth:`chat`, streaming. With tools, the text the model says streams and its
        calls arrive in ``result.tool_calls`` at the end (see :mod:`phi3.tools`)."""
        return chat.chat_stream(
            self,
            messages,
            coerce_config(config, options),
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
        )

    def chat(
        self,
        messages: Sequence[ChatMessage],
        config: GenerationConfig | Mapping[str, Any] | None = None,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = True,
        **options: Any,
    ) -> GenerationResult:
        """Answer the last user turn of ``messages`` using the model's chat template.

        ``tools`` (OpenAI's function-tool definitions) and ``tool_choice`` (``"auto"``, ``"none"``,
        ``"required"`` or ``{"type": "function", "function": {"name": ...}}``) let the model call
        tools: the result's ``tool_calls`` hold them (arguments valid against each tool's
        ``parameters``, because decoding is constrained to them) and ``finish_reason`` is
        ``"tool_calls"``. ``parallel_tool_calls=False`` allows one call per answer. How each model
        family is offered tools is in :mod:`phi3.tools`.
        """
        stream = self.chat_stream(
            messages, config, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, **options
        )
        for _ in stream:
            pass
        return stream.result

    def __enter__(self) -> Model:
        return self


__all__ = ["Model", "TextStream"]
