"""A test backend: the reference backend under the name ``declaring``, declaring only the
structured-output kinds it is given (at the backend, engine or session level) and counting the
generations that reach it, so tests can prove a refusal happened before ``phi3_generate``. With a
``hold`` event, every generation stops after its first chunk with text until the test sets it, so a test can
keep a request decoding for as long as it needs, on any machine speed. With ``fail_after=N``, every
generation raises a ``BackendError`` after its N-th chunk (a backend failing mid-stream)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import phi3
from phi3.hookspecs import hookimpl
from phi3.testing import reference_backend
from phi3.types import BackendInfo, ChatMessage, Chunk, ConstraintKind, LoadRequest, SessionHandle


class Declaring:
    """The reference backend under another name, declaring only ``kinds`` (at the level given) and
    counting the generations that reach it."""

    def __init__(
        self,
        kinds: tuple[ConstraintKind, ...],
        level: str = "backend",
        hold: threading.Event | None = None,
        fail_after: int | None = None,
    ) -> None:
        self.kinds = kinds
        self.level = level
        self.generate_calls = 0
        self.hold = hold
        self.fail_after = fail_after
        self.held = threading.Event()
        """Set once a generation is waiting on ``hold``."""

    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        info = reference_backend.phi3_backend_info()
        engines = info.engines
        if self.level == "engine":
            engines = tuple(dataclasses.replace(e, structured_output=self.kinds) for e in engines)
        declared = self.kinds if self.level == "backend" else reference_backend.phi3_backend_info().structured_output
        # no optional sampling controls either: a min_p request is refused before it reaches phi3_generate
        return dataclasses.replace(info, name="declaring", engines=engines, structured_output=declared, sampling=())

    @hookimpl
    def phi3_quantize(self, request: Any, output_dir: Path, progress: Any) -> Mapping[str, Any]:
        return reference_backend.phi3_quantize(request, output_dir, progress)

    @hookimpl
    def phi3_load(self, request: LoadRequest) -> SessionHandle:
        session = reference_backend.phi3_load(request)
        if self.level == "session":
            session = dataclasses.replace(session, structured_output=self.kinds)
        return dataclasses.replace(session, backend="declaring")

    @hookimpl
    def phi3_apply_chat_template(self, session: SessionHandle, messages: Sequence[ChatMessage]) -> str:
        return reference_backend.phi3_apply_chat_template(session, messages)

    @hookimpl
    def phi3_generate(self, session: SessionHandle, prompt: str, config: phi3.GenerationConfig) -> Iterator[Chunk]:
        self.generate_calls += 1
        chunks = reference_backend.phi3_generate(session, prompt, config)
        if self.fail_after is not None:
            return self._failing(chunks, self.fail_after)
        return chunks if self.hold is None else self._held(chunks, self.hold)

    def _failing(self, chunks: Iterator[Chunk], after: int) -> Iterator[Chunk]:
        for index, chunk in enumerate(chunks):
            yield chunk
            if index + 1 == after:
                raise phi3.errors.BackendError("the test backend failed mid-stream")

    def _held(self, chunks: Iterator[Chunk], hold: threading.Event) -> Iterator[Chunk]:
        # hold after the first chunk that carries text: one without (the first half of a character)
        # gives the client nothing yet, and the server answers a stream only once it has a first piece
        waited = False
        for chunk in chunks:
            yield chunk
            if chunk.text and not waited:
                waited = True
                self.held.set()
                assert hold.wait(60), "the test never released the held generation"
