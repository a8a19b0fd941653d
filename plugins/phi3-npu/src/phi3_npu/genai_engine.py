"""The ``genai`` engine: OpenVINO GenAI's ``LLMPipeline`` on device ``NPU`` (the library's successor).

On the NPU, LLMPipeline compiles static-shape models: prompts up to ``MAX_PROMPT_LEN`` tokens and a
KV cache of ``MAX_PROMPT_LEN + MIN_RESPONSE_LEN``. This engine passes those knobs (plus
``GENERATE_HINT``/``PREFILL_HINT`` when set, and ``CACHE_DIR`` inside phi3's cache so the slow NPU
compile happens once), and enforces both limits itself, before anything runs:

- a prompt longer than ``MAX_PROMPT_LEN`` is a ``PromptTooLongError`` naming the limit (peers answer
  with garbage there);
- ``max_new_tokens`` is capped at what the KV cache leaves, so the stream ends with
  ``finish_reason="length"`` where the NPU would stop.

On the CPU override the CPU plugin refuses the NPU properties, so they are not sent, but the same
limits are applied: a run on ``--device CPU`` behaves like the NPU would with the same options,
which is what makes it a useful stand-in (and how the tests check the guard on machines without an
NPU). Tokenizing here (``Tokenizer.encode``) also counts the prompt exactly and hands genai token ids,
so it cannot apply the chat template a second time. Streaming, generation-config mapping and
artifact checks are phi3-openvino's (:mod:`phi3_openvino.streaming`, ``config_mapping``, ``artifact``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, BackendError, ConfigError, Phi3Error, PromptTooLongError
from phi3.generation_config import GenerationConfig
from phi3.types import Artifact, ChatMessage, Chunk
from phi3_npu.devices import NPU, resolve_genai_device
from phi3_npu.options import GenAISettings


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def token_budget(prompt_tokens: int, max_new_tokens: int, context: int | None, settings: GenAISettings) -> int:
    """New tokens allowed for this prompt; PromptTooLongError when the NPU pipeline cannot take it."""
    if prompt_tokens > settings.max_prompt_len:
        raise PromptTooLongError(
            f"the prompt is {prompt_tokens} tokens; the NPU pipeline is compiled for prompts of at most "
            f"MAX_PROMPT_LEN={settings.max_prompt_len} tokens",
            hint=f"shorten the prompt, or load with -O max_prompt_len={prompt_tokens} (or more; "
            "a larger limit compiles a larger NPU model)",
        )
    if context is not None and prompt_tokens >= context:
        raise PromptTooLongError(
            f"the prompt is {prompt_tokens} tokens but the model's context is {context} tokens",
            hint="shorten the prompt (it must leave room for at least one new token)",
        )
    room = settings.kv_cache_len - prompt_tokens
    if context is not None:
        room = min(room, context - prompt_tokens)
    return min(max_new_tokens, room)  # >= 1: the prompt fits both limits


class GenAIEngine:
    """An ``LLMPipeline`` compiled for the NPU (or the CPU override), with the NPU's limits."""

    name = "genai"

    def __init__(self, artifact: Artifact, device: str, settings: GenAISettings, cache_dir: Path) -> None:
        import openvino_genai

        from phi3_openvino.artifact import check_files, context_length, explain_load_failure

        check_files(artifact)
        self.device = resolve_genai_device(device)
        self.settings = settings
        properties: dict[str, Any] = {"CACHE_DIR": str(cache_dir / "genai"), **settings.ov_config}
        if self.device == NPU:
            properties.update(settings.npu_properties())
        self.properties = properties
        try:
            self._pipe = openvino_genai.LLMPipeline(str(artifact.path), self.device, **properties)
        except Exception as exc:
            raise explain_load_failure(artifact, self.device, exc) from exc
        self._tokenizer = self._pipe.get_tokenizer()
        self.model_context_length = context_length(artifact)
        # The NPU pipeline's KV cache is its context: phi3 reports a stream it ends as "length".
        model_context = self.model_context_length
        self.context_length = min(model_context, settings.kv_cache_len) if model_context else settings.kv_cache_len
        self._busy = threading.Lock()
        self.details: dict[str, Any] = {
            "ov_config": dict(properties),
            "model_context_length": self.model_context_length,
            "npu_limits": {
                "MAX_PROMPT_LEN": settings.max_prompt_len,
                "MIN_RESPONSE_LEN": settings.min_response_len,
                "applied_by": "the NPU pipeline"
                if self.device == NPU
                else "phi3-npu (CPU override stands in for the NPU)",
            },
        }

    def count_tokens(self, prompt: str) -> Any:
        """The prompt's token ids (with BOS) as genai's ``TokenizedInputs``; never truncated."""
        try:
            return self._tokenizer.encode(prompt, add_special_tokens=True, truncation=False)
        except TypeError:  # openvino-genai before 2025.4 has no truncation flag (and does not truncate)
            return self._tokenizer.encode(prompt, add_special_tokens=True)

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Tokenize and check the prompt now; decode lazily in a worker thread."""
        import openvino_genai

        from phi3_openvino.config_mapping import to_genai
        from phi3_openvino.streaming import Push, stream_chunks

        inputs = self.count_tokens(prompt)
        prompt_tokens = int(inputs.input_ids.get_shape()[-1])
        max_new = token_budget(prompt_tokens, config.max_new_tokens, self.model_context_length, self.settings)
        gen_config = to_genai(config, self._pipe.get_generation_config(), max_new)
        pipe = self._pipe

        class _Streamer(openvino_genai.StreamerBase):  # type: ignore[misc]
            def __init__(self, push: Push) -> None:
                super().__init__()
                self._push = push

            def write(self, token: int | list[int]) -> openvino_genai.StreamingStatus:
                ids = [token] if isinstance(token, int) else list(token)
                stop = self._push(ids)
                return openvino_genai.StreamingStatus.CANCEL if stop else openvino_genai.StreamingStatus.RUNNING

            def end(self) -> None:
                return None

        def run(push: Push) -> None:
            pipe.generate(inputs, gen_config, _Streamer(push))

        return stream_chunks(
            run,
            self._decode,
            prompt_tokens=prompt_tokens,
            max_new_tokens=max_new,
            busy=self._busy,
            translate=_translate,
        )

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template stored in the converted tokenizer (the model's own)."""
        if not self._tokenizer.chat_template:
            raise ConfigError("this model has no chat template", hint="send a raw prompt instead (phi3 generate --raw)")
        try:
            return str(self._tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True))
        except Exception as exc:
            raise ArtifactError(f"the model's chat template failed to render: {_one_line(exc)}") from exc

    def close(self) -> None:
        self._pipe = None
        self._tokenizer = None


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, Phi3Error):
        return exc
    return BackendError(
        f"OpenVINO GenAI generation failed: {_one_line(exc)}", hint="run with --debug for the full trace"
    )


__all__ = ["GenAIEngine", "token_budget"]
