"""A loaded model's decoding layer: the session a backend opened, and phi3's rules on top of it.

phi3 does the parts that must behave the same on every backend: config validation, stop strings
(text that might begin a stop string is held back, never shown and then retracted),
``max_new_tokens`` as a hard cap, timing (time to first token, decode tokens/s) and the result.

:class:`ModelCore` holds the primitives (raw streams, generation slots, the chat template, what the
backend enforces, the model's lifetime); :class:`phi3.Model` (:mod:`phi3.model`) is a ``ModelCore``
plus chat, which :mod:`phi3.chat` orchestrates over these primitives and :mod:`phi3.tools`. Imports
go ``model`` -> ``chat`` -> ``tools`` -> ``decoding`` -> ``messages``, never back.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

from phi3.errors import AdapterError, BackendError, ConfigError, ModelBusyError, PluginError, UnsupportedError
from phi3.generation_config import GenerationConfig, coerce_config, find_stop
from phi3.messages import check_messages, check_unicode
from phi3.plugins import PluginRegistry
from phi3.selection import Selection
from phi3.types import (
    Artifact,
    ChatMessage,
    Chunk,
    ConstraintKind,
    FinishReason,
    GenerationResult,
    SamplingControl,
    SessionHandle,
)

log = logging.getLogger("phi3")


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """Iterator of text pieces; after it is exhausted, ``result`` holds the full result.

    Closing it early (``close()``, or leaving a ``for`` loop and dropping it) closes the backend's
    generator too, so the backend stops decoding.

    The stream takes one of the model's generation slots (``Model.max_concurrent_generations``) when
    it starts decoding (the first ``next``) and gives it back when it ends or is closed; a stream
    opened with :meth:`GenerationSlot.stream` decodes in the slot its caller already holds.

    ``Model.close()`` ends every stream of the model first: the next ``next`` raises ``ConfigError``
    (the model was closed), never a crash inside an unloaded runtime.
    """

    def __init__(
        self, model: ModelCore, prompt: str, config: GenerationConfig, slot: GenerationSlot | None = None
    ) -> None:
        self._model = model
        self._prompt = prompt
        self._config = config
        self._slot = slot
        self._result: GenerationResult | None = None
        self._new_tokens = 0
        self.stopped_by: str | None = None
        """The stop string that ended the text (``finish_reason="stop"``), else ``None``."""
        self._stopped_by_close = False
        check_unicode(prompt, "the prompt")
        self._iterator: Generator[str, None, None] = self._run()
        model._streams.add(self)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._stopped_by_close:
            raise _closed_error()
        try:
            return next(self._iterator)
        except StopIteration:
            if self._stopped_by_close:  # closed by Model.close() just before this next()
                raise _closed_error() from None
            raise

    def close(self) -> None:
        self._iterator.close()

    @property
    def new_tokens(self) -> int:
        """Tokens decoded so far (also after an early close: what the backend really produced)."""
        return self._new_tokens

    @property
    def result(self) -> GenerationResult:
        if self._result is None:
            raise RuntimeError("the stream has not finished yet: iterate it to the end first")
        return self._result

    def _stop_for_close(self) -> None:
        """Called by ``Model.close()``: end this stream before the runtime is unloaded."""
        self._stopped_by_close = True
        # ValueError: another thread is inside the backend right now; it stops after this chunk
        with contextlib.suppress(ValueError):
            self._iterator.close()

    def _run(self) -> Generator[str, None, None]:
        if self._slot is not None:  # its caller holds the slot (several decodes in one)
            yield from self._decode()
            return
        with self._model._take_slot():
            yield from self._decode()

    def _decode(self) -> Generator[str, None, None]:
        model, config = self._model, self._config
        registry, name = model._registry, model.backend
        stops = config.stop
        start = time.perf_counter()
        chunks = registry.call(name, "phi3_generate", session=model.session, prompt=self._prompt, config=config)
        if chunks is None:
            raise PluginError(f"backend {name!r} returned nothing from phi3_generate")
        text, emitted = "", 0
        ids: list[int] = []
        prompt_tokens: int | None = None
        first_at: float | None = None
        last_at = start
        finish: FinishReason = "eos"
        context = model.context_length
        iterator = iter(chunks)
        try:
            while True:
                with registry.guard(name, "phi3_generate"):
                    try:
                        chunk = next(iterator)
                    except StopIteration:
                        break
                if not isinstance(chunk, Chunk):
                    raise PluginError(f"backend {name!r} yielded {type(chunk).__name__}, not phi3.Chunk")
                if self._stopped_by_close:
                    raise _closed_error()
                now = time.perf_counter()
                if chunk.prompt_tokens is not None and prompt_tokens is None:
                    prompt_tokens = chunk.prompt_tokens
                if chunk.token_ids:
                    if first_at is None:
                        first_at = now
                    last_at = now
                    ids.extend(chunk.token_ids)
                    self._new_tokens = len(ids)
                text += chunk.text
                cut = find_stop(text, stops) if stops else -1
                if cut >= 0:
                    self.stopped_by = next(stop for stop in stops if text.startswith(stop, cut))
                    text, finish = text[:cut], "stop"
                    if cut > emitted:
                        yield text[emitted:cut]
                    emitted = cut
                    break
                safe = len(text) - (_held_back(text, stops) if stops else 0)
                if safe > emitted:
                    yield text[emitted:safe]
                    emitted = safe
                if len(ids) >= config.max_new_tokens:
                    finish = "length"
                    break
                if context and prompt_tokens is not None and prompt_tokens + len(ids) >= context:
                    finish = "length"  # the context is full: later positions are ones the model never saw
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with registry.guard(name, "phi3_generate"):
                    close()
        if finish == "eos" and context and prompt_tokens is not None and prompt_tokens + len(ids) >= context:
            finish = "length"  # the backend stopped because the context window is full
        if finish != "stop" and emitted < len(text):
            yield text[emitted:]
        if len(ids) > config.max_new_tokens:
            raise BackendError(
                f"backend {name!r} produced {len(ids)} tokens, over max_new_tokens={config.max_new_tokens}",
                hint="this is a backend bug; report it",
            )
        end = time.perf_counter()
        ttft = (first_at if first_at is not None else end) - start
        decode_s = last_at - first_at if first_at is not None else 0.0
        decode_rate = (len(ids) - 1) / decode_s if len(ids) > 1 and decode_s > 0 else 0.0
        self._result = GenerationResult(
            text=text,
            token_ids=tuple(ids),
            prompt_tokens=prompt_tokens if prompt_tokens is not None else 0,
            finish_reason=finish,
            time_to_first_token_s=ttft,
            decode_tokens_per_s=decode_rate,
            total_s=end - start,
            backend=name,
            engine=model.engine,
            device=model.device,
            precision=model.precision,
            adapter=config.adapter,
        )


class GenerationSlot:
    """One of a model's generation slots, held by a stream of several decodes (:meth:`ModelCore.stream_passes`).

    Every decode opened with :meth:`stream` runs in this slot, so no other stream runs on the model in
    between; the streams it opened are kept in order (``passes``) for the tokens and time they took.
    """

    def __init__(self, model: ModelCore) -> None:
        self.model = model
        self.passes: list[TextStream] = []
        """The decodes opened in this slot, in order."""

    def stream(self, prompt: str, config: GenerationConfig) -> TextStream:
        """A raw decode of ``prompt`` in this slot (``config`` is used as given: check it with
        :meth:`ModelCore.check_supported` first when it comes from a caller)."""
        stream = TextStream(self.model, prompt, config, slot=self)
        self.passes.append(stream)
        return stream

    @property
    def new_tokens(self) -> int:
        """Tokens decoded so far by every stream of this slot."""
        return sum(stream.new_tokens for stream in self.passes)


Passes = Callable[[GenerationSlot], Generator[str, None, GenerationResult]]
"""What :meth:`ModelCore.stream_passes` runs: given the held slot, it decodes any number of
:meth:`GenerationSlot.stream` passes, yields the text to show and returns the whole result."""


class _PassesStream(TextStream):
    """A :class:`TextStream` whose text comes from several decodes in one generation slot."""

    def __init__(self, model: ModelCore, passes: Passes) -> None:
        self._passes = passes
        self._held: GenerationSlot | None = None
        super().__init__(model, "", GenerationConfig())

    @property
    def new_tokens(self) -> int:
        return self._held.new_tokens if self._held is not None else 0

    def _run(self) -> Generator[str, None, None]:
        with self._model._take_slot():
            self._held = GenerationSlot(self._model)
            self._result = yield from self._passes(self._held)


_live_models: weakref.WeakSet[ModelCore] = weakref.WeakSet()


@atexit.register
def _end_streams_at_exit() -> None:
    """Close every stream still open when the interpreter exits.

    A stream left suspended (a ``for`` loop broken off, a ``ModelBusyError`` from a second stream)
    keeps its backend's decoder waiting in native code; finalizing Python under it aborted the process
    (openvino-genai 2026.4.1: "terminate called without an active exception", SIGABRT). Closing it
    lets the backend cancel and join its worker first.
    """
    for model in list(_live_models):
        for stream in list(model._streams):
            stream._stop_for_close()


class ModelCore:
    """A loaded model's primitives; :class:`phi3.Model` adds chat. Create one with :func:`phi3.load`."""

    def __init__(
        self,
        registry: PluginRegistry,
        session: SessionHandle,
        artifact: Artifact,
        selection: Selection,
        adapters: Sequence[str] = (),
    ) -> None:
        self._registry = registry
        self._adapters = tuple(adapters)
        self.session = session
        self.artifact = artifact
        self.selection = selection
        self._closed = False
        self._streams: weakref.WeakSet[TextStream] = weakref.WeakSet()
        self._decoding = 0
        self._decoding_changed = threading.Condition()
        concurrency = session.max_concurrent_generations
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise PluginError(
                f"backend {session.backend!r} reported max_concurrent_generations={concurrency!r}; "
                "it must be a whole number >= 1"
            )
        self._slots = threading.BoundedSemaphore(concurrency)
        _live_models.add(self)

    @property
    def adapters(self) -> tuple[str, ...]:
        """The names of the LoRA adapters loaded with the model (``phi3.load(..., adapters=...)``),
        in the order given; ``generate(..., adapter=NAME)`` picks one per generation."""
        return self._adapters

    @property
    def max_concurrent_generations(self) -> int:
        """How many streams this model runs at once (its backend's promise; 1 = one at a time)."""
        return self.session.max_concurrent_generations

    @contextlib.contextmanager
    def _take_slot(self) -> Iterator[None]:
        """Hold one generation slot, or refuse at once: a backend given more concurrent streams
        than it declared may corrupt its state or abort the process, so phi3 never waits here
        (a caller that wants to queue, like ``phi3 serve``, schedules before streaming)."""
        if not self._slots.acquire(blocking=False):
            raise ModelBusyError(
                f"this model is already running {self.max_concurrent_generations} generation(s), as many as "
                f"backend {self.backend!r} allows at once",
                hint="finish or close the other stream first, or use one Model per thread",
            )
        try:
            with self._decoding_changed:
                if self._closed:  # closed between creating the stream and its first next()
                    raise _closed_error()
                self._decoding += 1
            try:
                yield
            finally:
                with self._decoding_changed:
                    self._decoding -= 1
                    self._decoding_changed.notify_all()
        finally:
            self._slots.release()

    # -- what is running ----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self.session.backend

    @property
    def engine(self) -> str:
        return self.session.engine

    @property
    def device(self) -> str:
        """The device really used, as the backend reports it."""
        return self.session.device

    @property
    def precision(self) -> str:
        return self.artifact.precision

    @property
    def context_length(self) -> int | None:
        """Tokens this session can hold, prompt and output together.

        The rule (see :mod:`phi3.hookspecs`): the session's own ``context_length`` (what the backend
        really allocated, e.g. a KV cache smaller than a 128k model's context) wins; without one,
        the artifact's (what the model supports).
        """
        session = self.session.context_length
        return session if session is not None else self.artifact.context_length

    @property
    def selection_reason(self) -> str:
        return self.selection.reason

    @property
    def structured_output(self) -> tuple[ConstraintKind, ...]:
        """The structured-output kinds this model enforces while decoding (see
        ``BackendInfo.structured_output``): the session's own narrowing wins, then the engine's
        declaration, then the backend's."""
        session = self.session.structured_output
        if session is not None:
            return tuple(session)
        engine = self.selection.engine.structured_output
        if engine is not None:
            return tuple(engine)
        return tuple(self.selection.info.structured_output)

    @property
    def sampling(self) -> tuple[SamplingControl, ...]:
        """The optional sampling controls this model applies (see ``BackendInfo.sampling``): the
        engine's declaration, then the backend's."""
        engine = self.selection.engine.sampling
        if engine is not None:
            return tuple(engine)
        return tuple(self.selection.info.sampling)

    def check_supported(self, config: GenerationConfig) -> None:
        """Refuse ``config`` before any decoding if it names an adapter the model has not loaded
        (``AdapterError`` listing the loaded ones), asks for a constraint this model cannot
        enforce, or a sampling control its runtime does not have (``UnsupportedError`` naming it).
        ``phi3 serve`` calls it up front so a client gets a 400 instead of a failed stream."""
        if config.adapter is not None and config.adapter not in self._adapters:
            loaded = ", ".join(self._adapters)
            raise AdapterError(
                f"no adapter named {config.adapter!r} is loaded"
                + (f"; this model has {loaded}" if loaded else "; this model has none"),
                hint="pick a loaded adapter, or load it with phi3.load(..., adapters={NAME: PATH})"
                if loaded
                else "load it with phi3.load(..., adapters={NAME: PATH}) (CLI: --adapter NAME=PATH)",
            )
        if config.do_sample and config.min_p > 0 and "min_p" not in self.sampling:
            raise UnsupportedError(
                f"backend {self.backend!r} (engine {self.engine!r}) has no min_p sampler",
                hint="leave min_p out (or 0), or use top_p / top_k; `phi3 list-backends --json` lists each "
                "backend's sampling controls",
            )
        constraint = config.output_constraint
        if constraint is None or constraint.kind in self.structured_output:
            return
        enforced = ", ".join(self.structured_output) or "no structured output"
        raise UnsupportedError(
            f"backend {self.backend!r} (engine {self.engine!r} on {self.device}) cannot enforce "
            f"{constraint.kind} output; it enforces {enforced}",
            hint="choose a backend whose `phi3 list-backends` entry lists it, or drop the constraint",
        )

    def __repr__(self) -> str:
        return (
            f"<phi3.Model {self.artifact.manifest.get('source', {}).get('model_id', '?')} "
            f"backend={self.backend} engine={self.engine} device={self.device} precision={self.precision}>"
        )

    # -- generation ---------------------------------------------------------------------------

    def stream(
        self, prompt: str, config: GenerationConfig | Mapping[str, Any] | None = None, **options: Any
    ) -> TextStream:
        """Generate from a raw (already formatted) prompt, yielding text pieces as they decode."""
        self._check_open()
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        gen_config = coerce_config(config, options)
        self.check_supported(gen_config)
        return TextStream(self, prompt, gen_config)

    def generate(
        self, prompt: str, config: GenerationConfig | Mapping[str, Any] | None = None, **options: Any
    ) -> GenerationResult:
        """Generate from a raw prompt and return the whole result."""
        stream = self.stream(prompt, config, **options)
        for _ in stream:
            pass
        return stream.result

    def stream_passes(self, passes: Passes) -> TextStream:
        """A stream of several decodes that holds one generation slot for all of them.

        ``passes`` is called with the held :class:`GenerationSlot` when the stream starts (its first
        ``next``); it opens decodes with ``slot.stream(prompt, config)``, yields the text to show and
        returns the :class:`GenerationResult` of the whole (``stream.result``). Chat with tools is
        built on it (:mod:`phi3.tools`: free text, then a constrained call, in one slot).
        """
        self._check_open()
        return _PassesStream(self, passes)

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """Render chat messages with the model's own template (ending with the assistant turn).

        ``tools`` go to the template's ``tools`` variable; only backends declaring
        ``BackendInfo.chat_template_tools`` accept them (others: ``UnsupportedError``).
        """
        self._check_open()
        checked = check_messages(messages)
        if tools is not None and not self.selection.info.chat_template_tools:
            raise UnsupportedError(
                f"backend {self.backend!r} does not pass tools to the model's chat template",
                hint="use Model.chat(messages, tools=...), which offers tools on every backend",
            )
        if self.artifact.manifest.get("has_chat_template") is False:  # recorded when the artifact was built
            raise ConfigError(
                f"{self.artifact.manifest.get('source', {}).get('model_id', 'this model')} has no chat template",
                hint="send a raw prompt instead (phi3 generate --raw), or add the template to the checkpoint",
            )
        rendered = self._registry.call(
            self.backend,
            "phi3_apply_chat_template",
            session=self.session,
            messages=checked,
            tools=None if tools is None else [dict(tool) for tool in tools],
        )
        if not isinstance(rendered, str):
            raise PluginError(
                f"backend {self.backend!r} returned {type(rendered).__name__} from phi3_apply_chat_template, not str"
            )
        return rendered

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the runtime. Streams still open end first: one suspended between pieces is closed
        here; one inside the backend in another thread stops after its current piece, and close
        waits for it, so the runtime is never unloaded under a decoding thread."""
        with self._decoding_changed:
            if self._closed:
                return
            self._closed = True
        for stream in list(self._streams):
            stream._stop_for_close()
        with self._decoding_changed:
            while self._decoding:
                self._decoding_changed.wait()
        if self._registry.has_hook(self.backend, "phi3_unload"):
            self._registry.call(self.backend, "phi3_unload", session=self.session)

    def __enter__(self) -> ModelCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this model is closed; load it again")


def _closed_error() -> ConfigError:
    return ConfigError("the model was closed while this stream was running", hint="load the model again")


__all__ = ["GenerationSlot", "ModelCore", "Passes", "TextStream"]
