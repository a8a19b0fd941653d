"""The object phi3 drives for one loaded model (:class:`phi3.engine_hooks.Engine`).

``phi3_load`` returns :func:`phi3.engine_hooks.engine_session` of a :class:`LlamaEngine`; core's
forwarding hooks (re-exported by :mod:`phi3_llamacpp.plugin`) call its ``generate``,
``apply_chat_template`` and ``close``. The work is in :mod:`phi3_llamacpp.session` (opening the
GGUF, the context rule, the chat template) and :mod:`phi3_llamacpp.generate` (the decode loop).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from phi3.generation_config import GenerationConfig
from phi3.types import ChatMessage, Chunk, LoadRequest
from phi3_llamacpp import generate as decoding
from phi3_llamacpp import session


class LlamaEngine:
    """One ``llama_cpp.Llama`` (and its LoRA adapters), one generation at a time."""

    def __init__(self, request: LoadRequest) -> None:
        self.runtime = session.load(request)
        self.name = request.engine
        self.device = self.runtime.device
        limited = self.runtime.context_length < self.runtime.model_context
        self.context_length: int | None = self.runtime.context_length if limited else None
        """Reported only when this session holds less than the model's context."""
        self.details: Mapping[str, Any] = self.runtime.details

    @property
    def llama(self) -> Any:
        """The live ``llama_cpp.Llama`` (benchmarks and tests read its metadata)."""
        return session.live(self.runtime).llama

    @property
    def n_batch(self) -> int:
        return self.runtime.n_batch

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        return decoding.generate(self.runtime, prompt, config)

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        return session.apply_chat_template(self.runtime, messages)

    def close(self) -> None:
        session.close(self.runtime)


__all__ = ["LlamaEngine"]
