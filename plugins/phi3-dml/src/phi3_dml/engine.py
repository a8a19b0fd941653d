"""The object phi3 drives for one loaded model (:class:`phi3.engine_hooks.Engine`).

:func:`phi3_dml.session.load` opens the runtime and returns a :class:`DmlEngine`; the plugin hands it
to :func:`phi3.engine_hooks.engine_session`, whose forwarding hooks call :meth:`DmlEngine.generate`,
:meth:`DmlEngine.apply_chat_template` and :meth:`DmlEngine.close`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phi3.errors import ConfigError
from phi3.generation_config import GenerationConfig
from phi3.types import ChatMessage, Chunk, ConstraintKind

from phi3_dml import ENGINE_NAME
from phi3_dml.generate import generate
from phi3_dml.runtime import Runtime


@dataclass
class DmlEngine(Runtime):
    """A :class:`~phi3_dml.runtime.Runtime` plus what phi3 reports about the session."""

    name: str = ENGINE_NAME
    device: str = "cpu"
    """The device really used (``cpu``, ``dml:0`` ...)."""
    details: Mapping[str, Any] = field(default_factory=dict)
    structured_output: tuple[ConstraintKind, ...] = ()
    """What this session really enforces (nothing where the runtime's guidance does not work)."""

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Check the prompt now; decode lazily (see :mod:`phi3_dml.generate`)."""
        return generate(self, prompt, config)

    def apply_chat_template(self, messages: Sequence[ChatMessage], tools: Sequence[Any] | None = None) -> str:
        """Render with the model's own template through the runtime tokenizer's template engine;
        ``tools`` (JSON text, as the runtime takes them) reach the template's ``tools`` variable."""
        if self.tokenizer is None:
            raise ConfigError("this model has been unloaded; load it again")
        if not self.chat_template:
            raise ConfigError(
                "this model ships no chat template", hint="send a raw prompt instead (phi3 generate --raw)"
            )
        payload = json.dumps([dict(m) for m in messages], ensure_ascii=False)
        extra: dict[str, str] = {}
        if tools is not None:
            extra["tools"] = json.dumps([dict(tool) for tool in tools], ensure_ascii=False)
        try:
            return str(
                self.tokenizer.apply_chat_template(
                    payload, template_str=self.chat_template, add_generation_prompt=True, **extra
                )
            )
        except RuntimeError as exc:
            raise ConfigError(
                f"the model's chat template failed to render these messages: {' '.join(str(exc).split())}",
                hint="send a raw prompt instead (phi3 generate --raw)",
            ) from exc

    def close(self) -> None:
        """Drop the runtime objects so their native memory is freed now, not at interpreter exit."""
        self.adapters = None
        self.tokenizer = None
        self.model = None


__all__ = ["DmlEngine"]
