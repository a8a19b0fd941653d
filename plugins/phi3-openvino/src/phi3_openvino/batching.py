"""The ``genai`` engine on OpenVINO GenAI's ``ContinuousBatchingPipeline``: N streams, one model.

``LLMPipeline`` runs one generation at a time, and two interleaved streams on it are not safe. With
``-O max_concurrent_generations=N`` (N > 1) phi3-openvino opens a ``ContinuousBatchingPipeline``
instead (paged KV cache, a scheduler limited to N sequences, prefix caching) and reports N in
``SessionHandle.max_concurrent_generations``, so ``phi3 serve`` runs N requests at once on one copy
of the weights and each decode step serves them all.

One scheduler thread owns the pipeline: it calls ``step()`` while any request is unfinished and
hands each request's new token ids to that request's queue. A consumer (one per stream) submits its
request, reads its queue, and on close cancels the request, which the next step drops from the batch.
The tokenizer is shared, so its calls are serialised by a lock.

LoRA adapters: openvino-genai 2026.4.1 holds one set of adapter weights per pipeline (its own
``generate()`` refuses a batch whose requests name different adapters), and ``add_request`` ignores
``GenerationConfig.adapters``: only ``generate()`` applies them, and they stay applied. So requests
join the batch in arrival order while they use the adapter that is active; a request for another
one waits until the batch has drained, then the scheduler switches with a one-token ``generate()``
and admits it (and those after it that use the same adapter). Requests for different adapters share
the loaded base and the scheduler, one adapter at a time. ``test_batching_adapters_upstream`` turns
red when ``add_request`` applies a request's own adapters.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi3.errors import BackendError, ConfigError
from phi3.generation_config import GenerationConfig
from phi3.types import Artifact, ChatMessage, Chunk
from phi3_openvino import devices
from phi3_openvino.artifact import explain_load_failure
from phi3_openvino.config_mapping import to_genai
from phi3_openvino.genai_engine import GenAIEngine, _set_lengths, _translate
from phi3_openvino.streaming import IncrementalDecoder


@dataclass
class _Failure:
    error: BaseException


_DONE = object()


@dataclass(eq=False)  # compared by identity
class _Request:
    input_ids: Any
    config: Any
    adapter: str | None = None
    """The adapter this request runs with (None: the base model)."""
    handle: Any = None
    """genai's handle once the request has joined the batch."""
    events: queue.Queue[object] = field(default_factory=queue.Queue)


_BASE = object()
"""No adapter applied yet (the pipeline's state right after construction)."""


class _Scheduler:
    """The thread that steps the pipeline and routes new tokens to their requests."""

    def __init__(self, pipe: Any, switch_adapter: Any = None) -> None:
        import openvino_genai

        self._pipe = pipe
        self._switch_adapter = switch_adapter
        """``(name | None) -> None``: applies an adapter while the batch is empty (None: no adapters)."""
        self._active: object = _BASE
        self._running = openvino_genai.GenerationStatus.RUNNING
        self._ignored = openvino_genai.GenerationStatus.IGNORED
        self._lock = threading.Condition()
        self._requests: dict[int, _Request] = {}
        self._waiting: list[_Request] = []
        """Submitted, not yet in the batch (their adapter is not the active one), in arrival order."""
        self._ids = itertools.count()
        self._closed = False
        self._cancelled = False
        """A request was cancelled: one more step() frees its KV-cache blocks."""
        self._thread = threading.Thread(target=self._run, name="phi3-openvino-batching", daemon=True)
        self._thread.start()

    def submit(self, input_ids: Any, config: Any, adapter: str | None = None) -> _Request:
        with self._lock:
            if self._closed:
                raise ConfigError("this model is closed; load it again")
            request = _Request(input_ids, config, adapter)
            self._waiting.append(request)
            self._admit()
            self._lock.notify()
            return request

    def _admit(self) -> None:
        """Move waiting requests into the batch in order while they use the active adapter (lock held)."""
        while self._waiting and (self._switch_adapter is None or self._waiting[0].adapter == self._active):
            request = self._waiting.pop(0)
            request_id = next(self._ids)
            request.handle = self._pipe.add_request(request_id, request.input_ids, request.config)
            self._requests[request_id] = request

    def _switch_if_drained(self) -> None:
        """With the batch empty and the next request on another adapter: apply it, then admit (lock held)."""
        if self._requests or not self._waiting or self._switch_adapter is None:
            return
        wanted = self._waiting[0].adapter
        try:
            self._switch_adapter(wanted)
        except Exception as exc:  # that request fails; the others keep their turn
            self._waiting.pop(0).events.put(_Failure(exc))
            return
        self._active = wanted
        self._admit()

    def finish(self, request: _Request) -> None:
        """The consumer is done with ``request``: drop it from the batch if it is still running."""
        with self._lock:
            if request in self._waiting:
                self._waiting.remove(request)
                return
            for request_id, known in list(self._requests.items()):
                if known is request:
                    del self._requests[request_id]
            if request.handle is not None and request.handle.get_status() == self._running:
                request.handle.cancel()
                self._cancelled = True
                self._lock.notify()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for request in [*self._requests.values(), *self._waiting]:
                if request.handle is not None:
                    request.handle.cancel()
                    self._cancelled = True
                request.events.put(_Failure(ConfigError("the model was closed during generation")))
            self._requests.clear()
            self._waiting.clear()
            self._lock.notify()
        self._thread.join()
        if self._cancelled:
            self._pipe.step()  # let the scheduler free what cancelled requests held

    def _run(self) -> None:
        while True:
            with self._lock:
                while (
                    not self._closed
                    and not self._requests
                    and not self._waiting
                    and not self._cancelled
                    and not self._pipe.has_non_finished_requests()
                ):
                    self._lock.wait()
                if self._closed:
                    return
                if not self._pipe.has_non_finished_requests():
                    self._switch_if_drained()
                if self._requests or self._cancelled or self._pipe.has_non_finished_requests():
                    self._cancelled = False
                    self._step()

    def _step(self) -> None:
        """One ``step()`` of the batch, routing new tokens and endings to their requests (lock held)."""
        try:
            self._pipe.step()
        except Exception as exc:  # every running request fails with it; the thread carries on
            for request in self._requests.values():
                request.events.put(_Failure(exc))
            self._requests.clear()
            return
        for request_id, request in list(self._requests.items()):
            status = request.handle.get_status()
            if request.handle.can_read():
                for output in request.handle.read().values():
                    ids = [int(i) for i in output.generated_ids]
                    if ids:
                        request.events.put(ids)
            if status == self._ignored:
                request.events.put(
                    _Failure(BackendError("OpenVINO GenAI's scheduler could not fit this request in its cache"))
                )
                del self._requests[request_id]
            elif status != self._running:
                request.events.put(_DONE)
                del self._requests[request_id]


def _with_tokens(input_ids: Any, tokens: Sequence[int]) -> Any:
    """``input_ids`` (an ``ov.Tensor`` [1, n]) followed by ``tokens``, as a new tensor."""
    import numpy as np
    import openvino as ov

    ids = np.concatenate([np.asarray(input_ids.data).reshape(-1), np.asarray(tokens)]).astype(np.int64)
    return ov.Tensor(ids.reshape(1, -1))


class BatchingEngine(GenAIEngine):
    """:class:`GenAIEngine` on a ``ContinuousBatchingPipeline`` running up to N requests at once."""

    def __init__(
        self,
        artifact: Artifact,
        device: str,
        ov_config: dict[str, Any],
        cache_dir: Path,
        max_concurrent: int,
        *,
        context: int | None = None,
        adapters: Mapping[str, Path] | None = None,
    ) -> None:
        self.max_concurrent_generations = max_concurrent
        self._tokenizer_lock = threading.Lock()
        super().__init__(artifact, device, ov_config, cache_dir, context=context, adapters=adapters)
        if devices.kind_of(self.device) == "npu":
            self.close()
            raise ConfigError(
                "continuous batching (max_concurrent_generations > 1) does not run on the NPU",
                hint="use -O max_concurrent_generations=1 on the NPU, or a CPU/GPU device",
            )
        self.details["max_concurrent_generations"] = max_concurrent

    def _open_pipeline(self, artifact: Artifact) -> None:
        import openvino_genai

        scheduler = openvino_genai.SchedulerConfig()
        scheduler.max_num_seqs = self.max_concurrent_generations
        # no prefix cache for LongRoPE or with adapters: openvino-genai 2026.4.1 reuses KV blocks across
        # factor tables and across adapters (see genai_engine.no_prefix_cache and GenAIEngine._load_adapters)
        scheduler.enable_prefix_caching = self.longrope_switch is None and not self.adapters
        properties = dict(self.properties)
        if self.adapters:
            properties["adapters"] = self._load_adapters()
        tokenizer = self._grammar_tokenizer(artifact)
        try:
            if tokenizer is not None:
                self._pipe = openvino_genai.ContinuousBatchingPipeline(
                    str(artifact.path), tokenizer, scheduler, self.device, **properties
                )
            else:
                self._pipe = openvino_genai.ContinuousBatchingPipeline(
                    str(artifact.path), scheduler, self.device, properties
                )
        except Exception as exc:
            raise explain_load_failure(artifact, self.device, exc) from exc
        self._tokenizer = self._pipe.get_tokenizer()
        self._busy = threading.Lock()  # unused here; kept so GenAIEngine's invariants hold
        switch = self._switch_adapter if self.adapters else None
        self._scheduler: _Scheduler | None = _Scheduler(self._pipe, switch)

    def _switch_adapter(self, name: str | None) -> None:
        """Apply adapter ``name`` (None: none) to the pipeline, whose batch is empty.

        Workaround for openvino-genai 2026.4.1: only ``ContinuousBatchingPipeline.generate()``
        applies adapters (and they stay applied); ``add_request`` ignores a request's own. A
        one-token generation from one token is the cheapest call that applies them.
        """
        import numpy as np
        import openvino as ov

        config = self._pipe.get_config()
        config.max_new_tokens = 1
        config.min_new_tokens = 0
        config.do_sample = False
        config.adapters = self.adapter_config(name)
        bos = int(self._tokenizer.get_bos_token_id())
        self._pipe.generate([ov.Tensor(np.array([[max(bos, 0)]], dtype=np.int64))], [config])

    def _encode(self, prompt: str) -> Any:
        with self._tokenizer_lock:
            return super()._encode(prompt)

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return super()._decode(ids)

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        with self._tokenizer_lock:
            return super().apply_chat_template(messages, tools)

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Tokenize and check the prompt now; join the batch on the first ``next``."""
        inputs = self._encode(prompt)
        prompt_tokens = int(inputs.input_ids.get_shape()[-1])
        max_new = self.max_new_tokens(prompt_tokens, config.max_new_tokens)
        gen_config = to_genai(config, self._pipe.get_config(), max_new)
        if self.adapters or config.adapter is not None:
            gen_config.adapters = self.adapter_config(config.adapter)  # checks the name now
        constrained = config.output_constraint is not None
        return self._stream(
            inputs.input_ids, gen_config, prompt_tokens, max_new, config.ignore_eos, constrained, config.adapter
        )

    def _parts(self, prompt_tokens: int, max_new: int, constrained: bool = False) -> list[int]:
        """New tokens per request: two where the generation crosses the LongRoPE switch (see genai_engine),
        except under a grammar, which a second request would restart."""
        switch = self.longrope_switch
        if switch is None or constrained or not prompt_tokens <= switch < prompt_tokens + max_new - 1:
            return [max_new]
        first_part = switch - prompt_tokens + 1
        return [first_part, max_new - first_part]

    def _stream(
        self,
        input_ids: Any,
        gen_config: Any,
        prompt_tokens: int,
        max_new: int,
        ignore_eos: bool = False,
        constrained: bool = False,
        adapter: str | None = None,
    ) -> Iterator[Chunk]:
        scheduler = self._scheduler
        if scheduler is None:
            raise ConfigError("this model is closed; load it again")
        parts = self._parts(prompt_tokens, max_new, constrained)
        stops = {int(i) for i in gen_config.stop_token_ids} | {int(gen_config.eos_token_id)}
        decoder = IncrementalDecoder(self._decode)
        emitted: list[int] = []
        first = True
        for index, part in enumerate(parts):
            if index:  # past the LongRoPE switch: resubmit everything, prefilled with the long factors
                if len(emitted) < parts[0] or (not ignore_eos and emitted[-1] in stops):
                    break
                input_ids = _with_tokens(input_ids, emitted)
            if len(parts) > 1:
                _set_lengths(gen_config, part, ignore_eos)
            request = scheduler.submit(input_ids, gen_config, adapter)
            try:
                while True:
                    event = request.events.get()
                    if event is _DONE:
                        break
                    if isinstance(event, _Failure):
                        raise _translate(event.error) from event.error
                    assert isinstance(event, list)
                    ids = event[: max(0, max_new - len(emitted))]
                    if not ids:
                        continue
                    emitted.extend(ids)
                    yield Chunk(decoder.push(ids), tuple(ids), prompt_tokens if first else None)
                    first = False
            finally:
                scheduler.finish(request)
        rest = decoder.flush()
        if rest or first:
            yield Chunk(rest, (), prompt_tokens if first else None)

    def close(self) -> None:
        scheduler = getattr(self, "_scheduler", None)
        if scheduler is not None:
            scheduler.close()
            self._scheduler = None
        super().close()


__all__ = ["BatchingEngine"]
