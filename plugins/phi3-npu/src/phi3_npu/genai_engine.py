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
artifact checks are phi3-openvino's, through its public API (:mod:`phi3_openvino.api`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3.errors import PromptTooLongError
from phi3.types import Artifact, ConstraintKind
from phi3_npu.devices import NPU, resolve_genai_device
from phi3_npu.options import GENAI_STRUCTURED_OUTPUT, GenAISettings
from phi3_openvino.api import GenAIEngine as OpenVINOGenAIEngine
from phi3_openvino.api import context_length


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


class NPUPolicy:
    """What differs on the NPU (a ``DevicePolicy`` for phi3-openvino's public ``GenAIEngine``): the device names
    phi3-npu accepts, the NPU compile properties, the static-shape token budget, and no structured
    output claimed on a real NPU."""

    def __init__(self, settings: GenAISettings) -> None:
        self.settings = settings

    def resolve_device(self, device: str) -> str:
        return resolve_genai_device(device)

    def compile_properties(self, device: str, ov_config: Mapping[str, Any], cache_dir: Path) -> dict[str, Any]:
        properties: dict[str, Any] = {"CACHE_DIR": str(cache_dir / "genai"), **ov_config}
        if device == NPU:
            properties.update(self.settings.npu_properties())
        return properties

    def structured_output(self, device: str, kinds: tuple[ConstraintKind, ...]) -> tuple[ConstraintKind, ...]:
        """Nothing on a real NPU: its pipeline (static shapes) runs genai's sampler, grammars included,
        but phi3 has not seen a grammar hold on an NPU, so it does not claim it. The CPU override
        enforces what phi3-openvino's genai engine does, within this plugin's declaration
        (:data:`phi3_npu.options.GENAI_STRUCTURED_OUTPUT`)."""
        return () if device == NPU else tuple(kind for kind in kinds if kind in GENAI_STRUCTURED_OUTPUT)

    def token_budget(self, prompt_tokens: int, requested: int, model_context: int | None) -> int:
        return token_budget(prompt_tokens, requested, model_context, self.settings)


class GenAIEngine(OpenVINOGenAIEngine):
    """phi3-openvino's LLMPipeline engine compiled for the NPU (or the CPU override), with the NPU's limits.

    Only what differs on the NPU is here (:class:`NPUPolicy`); pipeline, streaming, decoding and
    chat templates are phi3-openvino's, used through its public API only.
    """

    name = "genai"

    def __init__(self, artifact: Artifact, device: str, settings: GenAISettings, cache_dir: Path) -> None:
        self.settings = settings
        model_context = context_length(artifact)
        # The NPU pipeline's KV cache is its context: phi3 reports a stream it ends as "length".
        context = min(model_context, settings.kv_cache_len) if model_context else settings.kv_cache_len
        super().__init__(
            artifact, device, dict(settings.ov_config), cache_dir, context=context, policy=NPUPolicy(settings)
        )
        self.details = {
            "ov_config": dict(self.properties),
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
        return self.encode(prompt)


__all__ = ["GenAIEngine", "NPUPolicy", "token_budget"]
