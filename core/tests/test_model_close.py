"""``Model.close()`` while streams are open: they end with a clear error before the runtime goes.

A runtime unloaded under a decoding thread crashes the process (freed KV cache, freed weights), so
close must first stop every stream: one suspended between pieces is closed on the spot; one inside
the backend in another thread finishes its current piece, sees the close, and stops, and only then
is ``phi3_unload`` called. The gated backend below is the reference backend (real transformers)
with a gate in its chunk stream, so a test can hold a thread inside ``phi3_generate``.
"""

from __future__ import annotations

import dataclasses
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import phi3
from phi3 import plugins
from phi3.testing import reference_backend
from phi3.types import Chunk, SessionHandle

PROMPT = "The quick brown fox"


def _gated_backend(inside: threading.Event, release: threading.Event, unloaded: list[int]) -> types.ModuleType:
    module = types.ModuleType("gated_reference")

    @phi3.hookimpl
    def phi3_generate(session: SessionHandle, prompt: str, config: phi3.GenerationConfig) -> Iterator[Chunk]:
        chunks = reference_backend.phi3_generate(session=session, prompt=prompt, config=config)

        def gated() -> Iterator[Chunk]:
            for index, chunk in enumerate(chunks):
                yield chunk
                if index == 0:  # the consumer asks for its next piece: hold it inside the backend
                    inside.set()
                    assert release.wait(30), "the test never released the gate"

        return gated()

    @phi3.hookimpl
    def phi3_load(request: phi3.LoadRequest) -> SessionHandle:
        return dataclasses.replace(reference_backend.phi3_load(request=request), backend="gated")

    @phi3.hookimpl
    def phi3_unload(session: SessionHandle) -> None:
        unloaded.append(threading.get_ident())

    for name in ("phi3_backend_info", "phi3_quantize", "phi3_apply_chat_template"):
        setattr(module, name, getattr(reference_backend, name))
    module.phi3_generate = phi3_generate  # type: ignore[attr-defined]
    module.phi3_load = phi3_load  # type: ignore[attr-defined]
    module.phi3_unload = phi3_unload  # type: ignore[attr-defined]
    return module


@pytest.fixture
def gate() -> tuple[threading.Event, threading.Event, list[int]]:
    inside, release, unloaded = threading.Event(), threading.Event(), []
    registry = plugins.get_registry()
    registry.register(_gated_backend(inside, release, unloaded), "gated")
    return inside, release, unloaded


def test_a_suspended_stream_is_ended_by_close(tiny_phi3: Path) -> None:
    model = phi3.load(tiny_phi3, backend="reference", precision="fp32")
    stream = model.stream(PROMPT, max_new_tokens=8, ignore_eos=True)
    assert next(stream)
    model.close()
    with pytest.raises(phi3.ConfigError, match="closed while this stream was running"):
        next(stream)
    with pytest.raises(phi3.ConfigError, match="closed"):
        model.generate(PROMPT, max_new_tokens=2)


def test_a_stream_created_but_not_started_is_refused_after_close(tiny_phi3: Path) -> None:
    model = phi3.load(tiny_phi3, backend="reference", precision="fp32")
    stream = model.stream(PROMPT, max_new_tokens=4)
    model.close()
    with pytest.raises(phi3.ConfigError, match="closed"):
        next(stream)


def test_close_waits_for_a_thread_inside_the_backend(
    tiny_phi3: Path, gate: tuple[threading.Event, threading.Event, list[int]]
) -> None:
    inside, release, unloaded = gate
    model = phi3.load(tiny_phi3, backend="gated", precision="fp32")
    outcome: list[BaseException | str] = []

    def consume() -> None:
        try:
            outcome.append("".join(model.stream(PROMPT, max_new_tokens=8, ignore_eos=True)))
        except BaseException as exc:  # the test inspects what the consumer saw
            outcome.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert inside.wait(30), f"the consumer never reached the backend: {outcome}"
    closer = threading.Thread(target=model.close)
    closer.start()
    closer.join(0.5)
    assert closer.is_alive(), "close() returned while a thread was still inside the backend"
    assert unloaded == [], "the runtime was unloaded under a decoding thread"
    release.set()
    closer.join(30)
    consumer.join(30)
    assert not closer.is_alive() and not consumer.is_alive()
    assert len(unloaded) == 1, "close() must unload exactly once, after the stream stopped"
    assert len(outcome) == 1 and isinstance(outcome[0], phi3.ConfigError), outcome
    assert "closed while this stream was running" in str(outcome[0])
