"""The ``optimum`` engine: optimum-intel's ``OVModelForCausalLM``, the guide's way.

The same OpenVINO IR as the genai engine, driven by transformers' ``generate`` loop (with a
transformers tokenizer), so it behaves exactly like the Hugging Face API people already know and
accepts every generation feature transformers has. It imports torch and transformers (~5 s); the
genai engine is the default for that reason. Structured output (all three kinds) is a logits
processor from :mod:`phi3.integrations.transformers_structured` (llguidance, compact JSON).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, BackendError, ConfigError, Phi3Error
from phi3.generation_config import GenerationConfig
from phi3.integrations import transformers_structured
from phi3.integrations.transformers_generation import sampling_seed, to_transformers
from phi3.types import Artifact, ChatMessage, Chunk
from phi3.vendor_compat import hide_broken_torchvision
from phi3_openvino import devices
from phi3_openvino.artifact import check_files, context_length, explain_load_failure, read_json
from phi3_openvino.config_mapping import compile_properties, device_defaults
from phi3_openvino.engine import budget
from phi3_openvino.streaming import Push, stream_chunks


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


def eos_token_ids(folder: Path) -> list[int]:
    """Every id that ends generation: generation_config.json first, then config.json."""
    found: list[int] = []
    for name in ("generation_config.json", "config.json"):
        value = read_json(folder / name).get("eos_token_id")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and item not in found:
                found.append(item)
    return found


def _longrope_switch(model: Any) -> int | None:
    """``original_max_position_embeddings`` of a LongRoPE model (where its RoPE tables switch), else None."""
    config = model.config
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    original = getattr(config, "original_max_position_embeddings", None)
    return int(original) if kind == "longrope" and original else None


def fix_longrope_switch(model: Any) -> bool:
    """Make ``model`` (an ``OVPhi3ForCausalLM``) survive generation past the LongRoPE switch; True if patched.

    Workaround for optimum-intel 2.2.0 with transformers 5.x (checked with 5.5.4):
    ``OVPhi3ForCausalLM.prepare_inputs_for_generation`` reads ``cache_position[0]`` to decide whether
    to drop the KV cache when a sequence first passes ``original_max_position_embeddings``, but
    transformers 5 no longer passes ``cache_position`` there, so every LongRoPE sequence that passes
    the switch dies with ``TypeError: 'NoneType' object is not subscriptable``. This instance method
    does what upstream means to do with the past length the stateful model tracks itself: at the
    switch the cache is dropped and the whole sequence is recomputed with the long factors (what
    transformers' full forward computes, so ids stay exact). ``test_family_parity.py`` holds the
    strict xfail that turns red once upstream works without this.
    """
    switch = _longrope_switch(model)
    if switch is None:
        return False
    from optimum.intel.openvino.modeling_decoder import OVModelForCausalLM

    base = OVModelForCausalLM.prepare_inputs_for_generation

    def prepare_inputs_for_generation(input_ids: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values and input_ids.shape[1] >= switch + 1 and model._get_past_length(past_key_values) <= switch:
            past_key_values = None  # recompute everything with the long factors, once
            kwargs.pop("position_ids", None)  # rebuilt from the attention mask for the whole sequence
        kwargs.pop("cache_position", None)
        return base(model, input_ids, past_key_values=past_key_values, **kwargs)

    model.prepare_inputs_for_generation = prepare_inputs_for_generation
    return True


class OptimumEngine:
    """An ``OVModelForCausalLM`` compiled for one concrete device, plus its HF tokenizer."""

    name = "optimum"

    def __init__(
        self,
        artifact: Artifact,
        device: str,
        ov_config: dict[str, Any],
        cache_dir: Path,
        *,
        context: int | None = None,
    ) -> None:
        check_files(artifact)
        self.device = devices.resolve(device)
        ov_config = device_defaults(devices.kind_of(self.device), artifact.precision, ov_config)
        self.properties = compile_properties(ov_config, cache_dir)
        hide_broken_torchvision()
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(artifact.path), local_files_only=True)
        except Exception as exc:
            raise ArtifactError(
                f"the tokenizer files of {artifact.path} are unreadable: {_one_line(exc)}",
                hint=f"delete it (phi3 cache rm {artifact.path.name}) and run again",
            ) from exc
        try:
            self._model = OVModelForCausalLM.from_pretrained(
                str(artifact.path),
                device=self.device,
                ov_config=dict(self.properties),
                compile=True,
                trust_remote_code=False,
                # explicit: HF_HUB_OFFLINE would turn it on, and then optimum looks the folder up as a hub id
                local_files_only=False,
            )
        except Exception as exc:
            raise explain_load_failure(artifact, self.device, exc) from exc
        self.longrope_patched = fix_longrope_switch(self._model)
        self.model_context_length = context_length(artifact)
        self.context_length = context if context is not None else self.model_context_length
        self._eos = eos_token_ids(artifact.path)
        self._busy = threading.Lock()
        self.details: dict[str, object] = {"ov_config": dict(self.properties)}

    @property
    def model(self) -> Any:
        """The ``OVModelForCausalLM`` itself, for callers who need more than text (e.g. logits)."""
        return self._model

    def generate(self, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
        """Tokenize and check the prompt now; run ``generate`` lazily in a worker thread."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        inputs = self._tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        max_new = budget(
            prompt_tokens, config.max_new_tokens, self.context_length, model_context=self.model_context_length
        )
        kwargs = to_transformers(config, max_new, self._eos)
        processors = []
        constraint = config.output_constraint
        if constraint is not None:  # compiled now: a schema llguidance refuses fails before decoding
            processors.append(
                transformers_structured.logits_processor(self._tokenizer, constraint, eos_token_ids=self._eos)
            )
            if config.ignore_eos:  # the grammar allows only EOS once complete: keep decoding it, never stop on it
                kwargs.pop("suppress_tokens", None)
                kwargs["eos_token_id"] = None
        seed = sampling_seed(config) if config.do_sample else None
        model = self._model
        cancelled = threading.Event()

        class _Streamer(BaseStreamer):  # type: ignore[misc]
            def __init__(self, push: Push) -> None:
                self._push = push
                self._prompt_seen = False

            def put(self, value: Any) -> None:
                if not self._prompt_seen:  # transformers hands the prompt over first
                    self._prompt_seen = True
                    return
                if self._push([int(i) for i in value.reshape(-1).tolist()]):
                    cancelled.set()

            def end(self) -> None:
                return None

        class _Cancel(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        def run(push: Push) -> None:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                model.generate(
                    **inputs,
                    **kwargs,
                    streamer=_Streamer(push),
                    stopping_criteria=StoppingCriteriaList([_Cancel()]),
                    logits_processor=LogitsProcessorList(processors),
                )

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
        """The transformers tokenizer's ``apply_chat_template`` (template shipped with the model),
        ``tools`` in the template's ``tools`` variable."""
        if not getattr(self._tokenizer, "chat_template", None):
            raise ConfigError("this model has no chat template", hint="send a raw prompt instead (phi3 generate --raw)")
        try:
            rendered = self._tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                tools=None if tools is None else [dict(tool) for tool in tools],
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:
            raise ArtifactError(f"the model's chat template failed to render: {_one_line(exc)}") from exc
        return str(rendered)

    def close(self) -> None:
        del self._model


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, Phi3Error):
        return exc
    return BackendError(
        f"optimum-intel generation failed: {_one_line(exc)}", hint="run with --debug for the full trace"
    )


__all__ = ["OptimumEngine", "eos_token_ids", "fix_longrope_switch"]
