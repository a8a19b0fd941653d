"""The ``genai`` engine: ``openvino_genai.LLMPipeline``, the default.

It needs only openvino, openvino-genai and openvino-tokenizers at run time (no torch, no
transformers: ~0.25 s to import instead of ~5 s), runs the tokenizer and detokenizer as OpenVINO
models, and uses the paged-attention backend that caches prompt prefixes across calls.

LongRoPE models (Phi-3-*-128k, Phi-3.5-mini, Phi-4-mini) switch from short to long RoPE factors
once a sequence is longer than ``original_max_position_embeddings``, and then *every* position's
keys change. Two things follow (workarounds for openvino-genai 2026.4.1, checked by
``tests/test_family_parity.py``):

- prefix caching is off for them: genai's prefix cache hands a later prompt KV blocks computed with
  the other factor table (a sequence of prompts diverged where a fresh pipeline was exact);
- a generation that crosses the switch runs in two calls: up to the switch, then again with
  prompt + tokens so far as a fresh prompt, whose prefill uses the long factors for the whole
  sequence (what transformers computes). genai alone keeps the short-factor keys in its KV cache
  and diverges from the switch on. It costs one extra prefill per crossing request.

Prompts are tokenized here (``Tokenizer.encode``) and handed to ``generate`` as token ids: that
counts the prompt exactly for ``prompt_tokens`` and the context check, and guarantees genai cannot
apply the chat template a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from phi3.errors import AdapterError, ArtifactError, BackendError, ConfigError, Phi3Error
from phi3.generation_config import GenerationConfig
from phi3.integrations.transformers_generation import longrope_switch
from phi3.probing import module_available
from phi3.types import Artifact, ChatMessage, Chunk, ConstraintKind
from phi3_openvino import devices
from phi3_openvino.artifact import check_files, context_length, explain_load_failure
from phi3_openvino.config_mapping import compile_properties, device_defaults, to_genai
from phi3_openvino.engine import budget
from phi3_openvino.grammar_vocab import GrammarTokenizer, grammar_tokenizer
from phi3_openvino.streaming import Push, stream_chunks

STRUCTURED_OUTPUT: tuple[ConstraintKind, ...] = ("json_schema", "json_object", "regex")
"""What this engine enforces with genai's ``StructuredOutputConfig`` (XGrammar inside).

JSON Schemas (and ``json_object``, the schema ``{"type": "object"}``) are compiled by phi3 with the
xgrammar package into a compact-JSON grammar and handed to genai as EBNF
(:mod:`phi3_openvino.json_grammar`): openvino-genai 2026.4.1's own ``json_schema`` allows free
whitespace between tokens (XGrammar's ``any_whitespace``, hard-coded), in which a small model can
spend its whole budget. Without xgrammar installed only ``regex`` is enforced
(:func:`enforced_kinds`)."""


def enforced_kinds() -> tuple[ConstraintKind, ...]:
    """:data:`STRUCTURED_OUTPUT`, less the JSON kinds when the xgrammar package is not installed."""
    if module_available("xgrammar"):
        return STRUCTURED_OUTPUT
    return tuple(kind for kind in STRUCTURED_OUTPUT if kind == "regex")


NPU_DEFAULT_MAX_PROMPT_LEN = 1024
"""openvino_genai's default prompt limit on the NPU (static shapes), unless MAX_PROMPT_LEN says otherwise."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


class DevicePolicy(Protocol):
    """What a device family changes in :class:`GenAIEngine`: the public extension point.

    phi3-openvino's engine uses :class:`OpenVINOPolicy`. A distribution that runs the same pipeline
    on another device (phi3-npu: the NPU, with its static shapes) passes an object with these four
    methods as ``GenAIEngine(..., policy=...)`` (subclassing :class:`OpenVINOPolicy` is one way);
    the engine calls nothing else of it. Every method gets what it needs as arguments, so a policy
    holds no engine state.
    """

    def resolve_device(self, device: str) -> str:
        """The concrete device to compile for (``AUTO`` and friends resolved); raise DeviceNotFoundError."""
        ...

    def compile_properties(self, device: str, ov_config: Mapping[str, Any], cache_dir: Path) -> dict[str, Any]:
        """The properties the pipeline is compiled with, from the user's ``ov_config`` (checked)."""
        ...

    def structured_output(self, device: str, kinds: tuple[ConstraintKind, ...]) -> tuple[ConstraintKind, ...]:
        """The structured-output kinds a session declares, given those the pipeline enforces
        (narrow them on a device where they are not known to hold)."""
        ...

    def token_budget(self, prompt_tokens: int, requested: int, model_context: int | None) -> int | None:
        """New tokens this prompt may get (raise PromptTooLongError when it cannot run), or None to
        use the engine's own rule (the session's context and, on an NPU, ``MAX_PROMPT_LEN``)."""
        ...


class OpenVINOPolicy:
    """phi3-openvino's own :class:`DevicePolicy`: OpenVINO's device names, phi3-openvino's compile
    defaults, every kind the pipeline enforces, the engine's token rule."""

    def resolve_device(self, device: str) -> str:
        return devices.resolve(device)

    def compile_properties(self, device: str, ov_config: Mapping[str, Any], cache_dir: Path) -> dict[str, Any]:
        return compile_properties(dict(ov_config), cache_dir)

    def structured_output(self, device: str, kinds: tuple[ConstraintKind, ...]) -> tuple[ConstraintKind, ...]:
        return kinds

    def token_budget(self, prompt_tokens: int, requested: int, model_context: int | None) -> int | None:
        return None


class GenAIEngine:
    """An ``LLMPipeline`` plus its tokenizer, compiled for one concrete device.

    ``adapters`` (name -> LoRA safetensors file, peft key names, scaling folded into B) are given
    to the pipeline at construction; each generation then applies exactly the one its config names
    (``GenerationConfig.adapter``; None = the base model).
    """

    name = "genai"

    def __init__(
        self,
        artifact: Artifact,
        device: str,
        ov_config: Mapping[str, Any],
        cache_dir: Path,
        *,
        context: int | None = None,
        policy: DevicePolicy | None = None,
        adapters: Mapping[str, Path] | None = None,
    ) -> None:
        check_files(artifact)
        self.policy: DevicePolicy = policy if policy is not None else OpenVINOPolicy()
        self.adapters: dict[str, Path] = dict(adapters or {})
        self.device = self.policy.resolve_device(device)
        ov_config = device_defaults(devices.kind_of(self.device), artifact.precision, ov_config)
        self.properties = self.policy.compile_properties(self.device, ov_config, cache_dir)
        self.longrope_switch = longrope_switch(artifact.path)
        self._open_pipeline(artifact)
        self.model_context_length = context_length(artifact)
        self.context_length = context if context is not None else self.model_context_length
        self._prompt_limit: int | None = None
        if devices.kind_of(self.device) == "npu":
            self._prompt_limit = int(self.properties.get("MAX_PROMPT_LEN", NPU_DEFAULT_MAX_PROMPT_LEN))
        self.details: dict[str, object] = {"ov_config": dict(self.properties)}

    def max_new_tokens(self, prompt_tokens: int, requested: int) -> int:
        """New tokens this prompt leaves room for; PromptTooLongError when it does not fit."""
        budget_by_policy = self.policy.token_budget(prompt_tokens, requested, self.model_context_length)
        if budget_by_policy is not None:
            return budget_by_policy
        return budget(
            prompt_tokens,
            requested,
            self.context_length,
            limit_name="MAX_PROMPT_LEN",
            prompt_limit=self._prompt_limit,
            model_context=self.model_context_length,
        )

    def encode(self, prompt: str) -> Any:
        """The prompt's token ids (special tokens added, never truncated) as genai ``TokenizedInputs``."""
        return self._encode(prompt)

    def _grammar_tokenizer(self, artifact: Artifact) -> Any | None:
        """The tokenizer to build the pipeline with so that its grammars are right, or None.

        Sets ``structured_output``: the kinds this session enforces (see :func:`enforced_kinds`),
        or none when the artifact's tokenizer cannot be given a decoded vocabulary.
        """
        try:
            found = grammar_tokenizer(artifact.path)
        except Exception as exc:
            error = explain_load_failure(artifact, self.device, exc)
            if isinstance(error, ArtifactError):  # a damaged tokenizer file: the pipeline would fail too
                raise error from exc
            found = GrammarTokenizer(None, f"the grammar vocabulary could not be built: {_one_line(exc)}")
        self.structured_output: tuple[ConstraintKind, ...] = self.policy.structured_output(
            self.device, enforced_kinds() if found.tokenizer is not None else ()
        )
        self.structured_output_note = found.reason
        return found.tokenizer

    def _open_pipeline(self, artifact: Artifact) -> None:
        import openvino_genai

        extra: dict[str, Any] = {}
        if (self.longrope_switch is not None or self.adapters) and devices.kind_of(self.device) != "npu":
            extra["scheduler_config"] = no_prefix_cache()
        if self.adapters:
            extra["adapters"] = self._load_adapters()
        tokenizer = self._grammar_tokenizer(artifact)
        try:
            if tokenizer is not None:
                self._pipe = openvino_genai.LLMPipeline(
                    str(artifact.path), tokenizer, self.device, **self.properties, **extra
                )
            else:
                self._pipe = openvino_genai.LLMPipeline(str(artifact.path), self.device, **self.properties, **extra)
        except Exception as exc:
            raise explain_load_failure(artifact, self.device, exc) from exc
        self._tokenizer = self._pipe.get_tokenizer()
        self._busy = threading.Lock()

    def _load_adapters(self) -> Any:
        """Every adapter as an ``openvino_genai.Adapter``, all given to the pipeline at construction.

        Prefix caching is off in a session with adapters (:func:`no_prefix_cache`): openvino-genai
        2026.4.1 keys cached KV blocks by tokens only, so a prompt would reuse blocks another adapter
        (or the base) computed (``test_prefix_cache_mixes_adapters_upstream``).
        """
        import openvino_genai

        if devices.kind_of(self.device) == "npu":
            raise AdapterError(
                "phi3-openvino runs no LoRA adapters on the NPU (its static pipeline cannot switch them per request)",
                hint="load with -d CPU or -d GPU, or without --adapter",
            )
        self._genai_adapters: dict[str, Any] = {}
        for name, path in self.adapters.items():
            try:
                self._genai_adapters[name] = openvino_genai.Adapter(str(path))
            except Exception as exc:
                raise AdapterError(
                    f"adapter {name!r}: OpenVINO GenAI cannot read {path}: {_one_line(exc)}",
                    hint="check the adapter folder (adapter_model.safetensors), or drop it",
                ) from exc
        return openvino_genai.AdapterConfig(list(self._genai_adapters.values()))

    def adapter_config(self, name: str | None) -> Any:
        """The ``AdapterConfig`` for one generation: exactly adapter ``name`` (alpha 1: its scaling is
        already in B, see :func:`phi3.adapters.write_peft_folder`), or none for the base model.

        Always set explicitly: a generation config without one makes genai apply what the pipeline
        was built with (every adapter at once).
        """
        import openvino_genai

        if name is None:
            return openvino_genai.AdapterConfig()
        adapter = getattr(self, "_genai_adapters", {}).get(name)
        if adapter is None:
            loaded = ", ".join(self.adapters) or "none"
            raise AdapterError(f"this model has no adapter {name!r}", hint=f"loaded adapters: {loaded}")
        return openvino_genai.AdapterConfig(adapter, 1.0)

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
        if self.adapters or config.adapter is not None:
            gen_config.adapters = self.adapter_config(config.adapter)
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

        switch = self.longrope_switch
        if (
            switch is None
            or config.output_constraint is not None  # a second call would restart the grammar: one call
            or not prompt_tokens <= switch < prompt_tokens + max_new - 1
        ):

            def run(push: Push) -> None:
                pipe.generate(inputs, gen_config, _Streamer(push))

        else:
            first_part = switch - prompt_tokens + 1  # the last token computed from <= switch positions
            stops = {int(i) for i in gen_config.stop_token_ids} | {int(gen_config.eos_token_id)}

            def run(push: Push) -> None:
                import numpy as np
                import openvino as ov

                emitted: list[int] = []
                stopped = False

                def tracking_push(ids: Sequence[int]) -> bool:
                    nonlocal stopped
                    emitted.extend(ids)
                    stopped = push(ids) or stopped
                    return stopped

                _set_lengths(gen_config, first_part, config.ignore_eos)
                pipe.generate(inputs, gen_config, _Streamer(tracking_push))
                if stopped or len(emitted) < first_part or (not config.ignore_eos and emitted[-1] in stops):
                    return
                # past the switch: a fresh prefill of everything, computed with the long factors
                ids = np.concatenate([np.asarray(inputs.input_ids.data).reshape(-1), np.asarray(emitted)])
                again = openvino_genai.TokenizedInputs(
                    ov.Tensor(ids.astype(np.int64).reshape(1, -1)), ov.Tensor(np.ones((1, ids.size), np.int64))
                )
                _set_lengths(gen_config, max_new - first_part, config.ignore_eos)
                pipe.generate(again, gen_config, _Streamer(tracking_push))

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

    def apply_chat_template(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """``Tokenizer.apply_chat_template``: the template stored in the converted tokenizer, with
        ``tools`` in the template's ``tools`` variable (openvino-genai 2025.3 and later)."""
        if not self._tokenizer.chat_template:
            raise ConfigError("this model has no chat template", hint="send a raw prompt instead (phi3 generate --raw)")
        extra: dict[str, Any] = {}
        if tools is not None and "tools" in str(self._tokenizer.chat_template):
            # only to a template that reads them: openvino-genai 2026.4.1 (minja) otherwise writes a
            # tool-use system prompt of its own into the conversation, which transformers and ONNX
            # Runtime GenAI do not (test_tools_reach_only_a_template_that_uses_them)
            extra["tools"] = [dict(tool) for tool in tools]
        try:
            return str(
                self._tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, **extra)
            )
        except Exception as exc:
            raise ArtifactError(f"the model's chat template failed to render: {_one_line(exc)}") from exc

    def close(self) -> None:
        self._pipe = None
        self._tokenizer = None


def no_prefix_cache() -> Any:
    """genai's latency-oriented scheduler config (its default on CPU/GPU) without prefix caching.

    Workaround for openvino-genai 2026.4.1: its prefix cache keys KV blocks by tokens only, so on a
    LongRoPE model it reuses blocks computed with the short factors for a prompt past the switch
    (and the reverse). ``test_prefix_cache_still_mixes_longrope_factors_upstream`` turns red when
    genai stops doing that.
    """
    import openvino_genai

    config = openvino_genai.SchedulerConfig()
    config.enable_prefix_caching = False
    config.max_num_batched_tokens = 2**63 - 1  # as genai's own default: no limit on the batch
    return config


def _set_lengths(gen_config: Any, max_new: int, ignore_eos: bool) -> None:
    gen_config.max_new_tokens = max_new
    gen_config.min_new_tokens = max_new if ignore_eos else 0


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, Phi3Error):
        return exc
    return BackendError(
        f"OpenVINO GenAI generation failed: {_one_line(exc)}", hint="run with --debug for the full trace"
    )


__all__ = ["DevicePolicy", "GenAIEngine", "OpenVINOPolicy", "no_prefix_cache"]
