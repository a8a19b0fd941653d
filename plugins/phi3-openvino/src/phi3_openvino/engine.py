"""What both engines share: the session object phi3 holds, and the prompt-length rule.

``SessionHandle.native`` is an :class:`Engine`; the hooks in :mod:`phi3_openvino.plugin` only
forward to it, so each engine module is self-contained (the genai one never imports torch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from phi3.errors import PromptTooLongError
from phi3.generation_config import GenerationConfig
from phi3.types import ChatMessage, Chunk


class Engine(Protocol):
    """A loaded model on one device, as one engine runs it."""

    name: str
    device: str
    """The concrete device compiled for (AUTO already resolved)."""
    context_length: int | None
    details: dict[str, object]

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Check the prompt now, then return the lazy chunk stream."""
        ...

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """Render with the model's own template, ending with the assistant prompt (``tools`` in the
        template's ``tools`` variable)."""
        ...

    def close(self) -> None:
        """Release the native pipeline/model."""
        ...


def budget(
    prompt_tokens: int,
    max_new_tokens: int,
    context_length: int | None,
    *,
    limit_name: str = "context",
    prompt_limit: int | None = None,
    model_context: int | None = None,
) -> int:
    """How many tokens may be generated; PromptTooLongError when the prompt leaves no room.

    Generation past the context would run positions the model never saw, so ``max_new_tokens`` is
    capped at what is left (phi3 then reports ``finish_reason="length"``). ``prompt_limit`` is a
    device's own limit on the prompt (the NPU's ``MAX_PROMPT_LEN``). ``model_context`` is what the
    model supports when the session holds less (the ``context_length`` load option raises it).
    """
    if prompt_limit is not None and prompt_tokens > prompt_limit:
        raise PromptTooLongError(
            f"the prompt is {prompt_tokens} tokens; this device accepts at most {prompt_limit} ({limit_name})",
            hint="shorten the prompt, or raise MAX_PROMPT_LEN in ov_config",
        )
    if context_length is None:
        return max_new_tokens
    if prompt_tokens >= context_length:
        if model_context and model_context > context_length:
            raise PromptTooLongError(
                f"the prompt is {prompt_tokens} tokens but this session holds {context_length} tokens "
                f"(the model supports {model_context})",
                hint=f"load with -O context_length={min(model_context, 2 * prompt_tokens)} (or max), "
                "or shorten the prompt",
            )
        raise PromptTooLongError(
            f"the prompt is {prompt_tokens} tokens but the model's context is {context_length} tokens",
            hint="shorten the prompt (it must leave room for at least one new token)",
        )
    return min(max_new_tokens, context_length - prompt_tokens)


__all__ = ["Engine", "budget"]
