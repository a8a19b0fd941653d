"""Ready-made hooks for backends built around an engine object (the common shape).

Most backends open one object per loaded model that knows how to generate, render the chat
template and close. Such a backend returns :func:`engine_session` from ``phi3_load`` and re-exports
the three forwarding hookimpls below from its plugin module, instead of writing them again::

    from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload

pluggy registers whatever hookimpls a plugin module holds, imported ones included.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from phi3.generation_config import GenerationConfig
from phi3.hookspecs import hookimpl
from phi3.types import ChatMessage, Chunk, SessionHandle


class Engine(Protocol):
    """What :func:`engine_session` expects of a backend's per-model object."""

    name: str
    device: str
    """The device really used."""
    context_length: int | None
    details: Mapping[str, Any]

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]: ...

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """The model's own template. An engine of a backend that declares
        ``BackendInfo.chat_template_tools`` also accepts ``tools=`` (a list of tool dicts)."""
        ...

    def close(self) -> None: ...


def engine_session(backend: str, engine: Engine) -> SessionHandle:
    """The SessionHandle for ``engine``: phi3 reports its name, device and context length.

    An engine that runs several generations at once says so in an optional
    ``max_concurrent_generations`` attribute (default 1; see :func:`phi3.hookspecs.phi3_load`).
    """
    return SessionHandle(
        backend=backend,
        engine=engine.name,
        device=engine.device,
        native=engine,
        context_length=engine.context_length,
        details=dict(engine.details),
        max_concurrent_generations=int(getattr(engine, "max_concurrent_generations", 1)),
    )


@hookimpl
def phi3_generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    """Forward to the engine (which checks the prompt before returning its stream)."""
    engine: Engine = session.native
    return engine.generate(prompt, config)


@hookimpl
def phi3_apply_chat_template(
    session: SessionHandle, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None
) -> str:
    """Forward to the engine's runtime tokenizer (the model's own template); ``tools`` only when
    given, so engines of backends without ``chat_template_tools`` keep their one-argument method."""
    engine: Any = session.native
    if tools is not None:
        return str(engine.apply_chat_template(messages, tools=list(tools)))
    return str(engine.apply_chat_template(messages))


@hookimpl
def phi3_unload(session: SessionHandle) -> None:
    """Release the engine's native resources now rather than at exit."""
    engine: Engine = session.native
    engine.close()


__all__ = ["Engine", "engine_session", "phi3_apply_chat_template", "phi3_generate", "phi3_unload"]
