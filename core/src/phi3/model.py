"""A loaded model: the session a backend opened, and the generate/stream/chat API on top.

phi3 does the parts that must behave the same on every backend: config validation, stop strings
(text that might begin a stop string is held back, never shown and then retracted),
``max_new_tokens`` as a hard cap, timing (time to first token, decode tokens/s) and the result.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from phi3.errors import BackendError, ConfigError, ModelBusyError, PluginError, UnsupportedError
from phi3.generation_config import GenerationConfig, coerce_config, find_stop
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
    it starts decoding (the first ``next``) and gives it back when it ends or is closed.

    ``Model.close()`` ends every stream of the model first: the next ``next`` raises ``ConfigError``
    (the model was closed), never a crash inside an unloaded runtime.
    """

    def __init__(self, model: Model, prompt: str, config: GenerationConfig) -> None:
        self._model = model
        self._prompt = prompt
        self._config = config
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
        with self._model._generation_slot():
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
        )


_live_models: weakref.WeakSet[Model] = weakref.WeakSet()


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


class Model:
    """A Phi-3 model loaded on one backend/engine/device. Create it with :func:`phi3.load`."""

    def __init__(
        self, registry: PluginRegistry, session: SessionHandle, artifact: Artifact, selection: Selection
    ) -> None:
        self._registry = registry
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
    def max_concurrent_generations(self) -> int:
        """How many streams this model runs at once (its backend's promise; 1 = one at a time)."""
        return self.session.max_concurrent_generations

    @contextlib.contextmanager
    def _generation_slot(self) -> Iterator[None]:
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
        """Refuse ``config`` before any decoding if it asks for a constraint this model cannot
        enforce, or a sampling control its runtime does not have (``UnsupportedError`` naming it).
        ``phi3 serve`` calls it up front so a client gets a 400 instead of a failed stream."""
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

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """Render chat messages with the model's own template (ending with the assistant turn).

        ``tools`` go to the template's ``tools`` variable; only backends declaring
        ``BackendInfo.chat_template_tools`` accept them (others: ``UnsupportedError``).
        """
        self._check_open()
        checked = _check_messages(messages)
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
        gen_config = coerce_config(config, options)
        if tools is not None or tool_choice is not None or _has_tool_turns(messages):
            from phi3 import tools as tool_calling  # imports this module: loaded on first use

            return tool_calling.open_stream(
                self,
                messages,
                gen_config,
                tools=tools,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel_tool_calls,
            )
        self.check_supported(gen_config)
        return TextStream(self, self.apply_chat_template(messages), gen_config)

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

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this model is closed; load it again")


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


def _closed_error() -> ConfigError:
    return ConfigError("the model was closed while this stream was running", hint="load the model again")


def _has_tool_turns(messages: object) -> bool:
    """Whether ``messages`` hold a tool call or a tool result (rendered by :mod:`phi3.tools`)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return False
    return any(isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)


def _check_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
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
            turn["tool_calls"] = _check_tool_calls(i, calls)
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


def _check_tool_calls(i: int, calls: object) -> list[dict[str, Any]]:
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


__all__ = ["Model", "TextStream"]
