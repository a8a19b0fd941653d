"""The ``genai`` engine: ``openvino_genai.LLMPipeline``, the default.

It needs only openvino, openvino-genai and openvino-tokenizers at run time (no torch, no
transformers: ~0.25 s to import instead of ~5 s), runs the tokenizer and detokenizer as OpenVINO
models, and uses the paged-attention backend that caches prompt prefixes across calls.

Prompts are tokenized here (``Tokenizer.encode``) and handed to ``generate`` as token ids: that
counts the prompt exactly for ``prompt_tokens`` and the context check, and guarantees genai cannot
apply the chat template a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, BackendError, ConfigError, Phi3Error
from phi3.generation_config import GenerationConfig
from phi3.types import Artifact, ChatMessage, Chunk
from phi3_openvino import devices
from phi3_openvino.artifact import check_files, context_length, explain_load_failure
from phi3_openvino.config_mapping import compile_properties, to_genai
from phi3_openvino.engine import budget
from phi3_openvino.streaming import Push, stream_chunks

NPU_DEFAULT_MAX_PROMPT_LEN = 1024
"""openvino_genai's default prompt limit on the NPU (static shapes), unless MAX_PROMPT_LEN says otherwise."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


class GenAIEngine:
    """An ``LLMPipeline`` plus its tokenizer, compiled for one concrete device."""

    name = "genai"

    def __init__(self, artifact: Artifact, device: str, ov_config: dict[str, Any], cache_dir: Path) -> None:
        check_files(artifact)
        self.device = self._resolve_device(device)
        self.properties = self._properties(ov_config, cache_dir)
        self._open_pipeline(artifact)
        self.context_length = context_length(artifact)
        self._prompt_limit: int | None = None
        if devices.kind_of(self.device) == "npu":
            self._prompt_limit = int(self.properties.get("MAX_PROMPT_LEN", NPU_DEFAULT_MAX_PROMPT_LEN))
        self.details: dict[str, object] = {"ov_config": dict(self.properties)}

    # -- what a subclass (phi3-npu's NPU engine) changes ---------------------------------------

    def _resolve_device(self, device: str) -> str:
        return devices.resolve(device)

    def _properties(self, ov_config: dict[str, Any], cache_dir: Path) -> dict[str, Any]:
        return compile_properties(ov_config, cache_dir)

    def max_new_tokens(self, prompt_tokens: int, requested: int) -> int:
        """New tokens this prompt leaves room for; PromptTooLongError when it does not fit."""
        return budget(
            prompt_tokens, requested, self.context_length, limit_name="MAX_PROMPT_LEN", prompt_limit=self._prompt_limit
        )

    # -- shared --------------------------------------------------------------------------------

    def _open_pipeline(self, artifact: Artifact) -> None:
        import openvino_genai

        try:
            self._pipe = openvino_genai.LLMPipeline(str(artifact.path), self.device, **self.properties)
        except Exception as exc:
            raise explain_load_failure(artifact, self.device, exc) from exc
        self._tokenizer = self._pipe.get_tokenizer()
        self._busy = threading.Lock()

    def _encode(self, prompt: str) -> Any:
        try:
            return self._tokenizer.encode(prompt, add_special_tokens=True, truncation=False)
        except TypeError:  # openvino-genai before 2025.4 has no truncation flag (and does not truncate)
            return self._tokenizer.encode(prompt, add_special_tokens=True)

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Tokenize and check the prompt now; decode lazily in a worker thread."""
        import openvino_genai

        inputs = self._encode(prompt)
        prompt_tokens = int(inputs.input_ids.get_shape()[-1])
        max_new = self.max_new_tokens(prompt_tokens, config.max_new_tokens)
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
        """``Tokenizer.apply_chat_template``: the template stored in the converted tokenizer."""
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


__all__ = ["GenAIEngine"]
