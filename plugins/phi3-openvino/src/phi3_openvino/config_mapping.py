"""phi3's options mapped onto OpenVINO's: compile properties and each engine's generation config.

Compile properties (``ov_config``): the guide's defaults, ``PERFORMANCE_HINT=LATENCY`` and
``NUM_STREAMS=1`` (one conversation, lowest latency), plus ``CACHE_DIR`` inside phi3's cache so a
second load reuses the compiled blob. The user's ``ov_config`` entries win over all three (``CACHE_DIR=""``
turns caching off; it is passed on rather than dropped, because optimum-intel would otherwise put a
cache for GPUs inside the artifact folder).

``INFERENCE_PRECISION_HINT``: on the CPU, int4 and int8 artifacts compile with ``f32``
(:func:`device_defaults`). OpenVINO's own default there is bf16 on CPUs with AVX512-BF16/AMX, and on
such a CPU (a 2-core Xeon, OpenVINO 2026.4.1, Phi-3-mini-shaped layers) bf16 decoded int4 at 33
tok/s and int8 at 28 where f32 decoded 49 and 42 (the compressed-weight matrix products run on
``brgemm_avx512_bf16`` against ``brgemm_avx512_f32`` in OpenVINO's profiler), and f32 is also the
precision the quality figures are measured at. The prefill of a 128-token prompt takes about a third
longer (250 vs 185 ms there). Measured interleaved while other work ran; ``benchmarks/tune.py
openvino`` has a ``bf16`` setting to re-measure it on a quiet machine. CPUs without bf16 (most
laptops) use f32 anyway, so this also makes a CPU answer the same on every machine. fp16 artifacts
keep OpenVINO's default (in f32 they decoded no faster and prefilled 3x slower), and a user's
``INFERENCE_PRECISION_HINT`` wins.

Generation: one :class:`phi3.GenerationConfig` becomes openvino_genai's ``GenerationConfig`` here, or
transformers' ``generate`` keyword arguments (the optimum engine, through core's
:func:`phi3.integrations.transformers_generation.to_transformers`). The two engines agree on the
meaning of every field:

- greedy unless ``do_sample``; ``top_k=0``, ``top_p=1`` and ``min_p=0`` disable those filters;
- ``seed`` seeds sampling; without one each call draws a fresh seed (genai would otherwise
  always use seed 0 and every "random" sample would be the same);
- ``ignore_eos`` suppresses end-of-sequence tokens until ``max_new_tokens`` (as the transformers
  reference does), so exactly that many tokens come back;
- ``stop`` strings: genai stops natively (``stop_strings``) and still streams the stop text, so
  that phi3, which cuts the text at the first stop string, reports ``finish_reason="stop"``.
  transformers' ``StopStringCriteria`` is not used: it matches the vocabulary's token strings,
  which for byte-fallback tokens disagree with the decoded text (it stopped before the text
  contained the stop string); phi3 finds the stop string in the decoded stream and closes it,
  and the engine stops at the next token;
- the prompt is never templated again (genai's ``apply_chat_template`` defaults to True, and phi3
  hands over prompts that are already formatted).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3.errors import UnsupportedError
from phi3.generation_config import GenerationConfig
from phi3.integrations.transformers_generation import sampling_seed
from phi3_openvino.regex_classes import non_ascii_class

if TYPE_CHECKING:
    import openvino_genai

DEFAULT_OV_CONFIG: Mapping[str, str] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}


CPU_COMPRESSED_DEFAULTS: Mapping[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
"""Compile properties phi3-openvino adds on the CPU for int4/int8 artifacts (see the module docstring)."""
COMPRESSED_PRECISIONS = ("int4", "int8")


def device_defaults(device_kind: str, precision: str, user: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``ov_config`` over phi3-openvino's defaults for this device kind and artifact precision."""
    if device_kind == "cpu" and precision in COMPRESSED_PRECISIONS:
        return {**CPU_COMPRESSED_DEFAULTS, **user}
    return dict(user)


def compile_defaults(device_kind: str, precision: str) -> dict[str, Any]:
    """Every compile property phi3-openvino sets for an artifact of ``precision`` on a device of this kind
    (besides its ``CACHE_DIR``): what a caller compiling the same artifact outside phi3 passes to match."""
    return {**DEFAULT_OV_CONFIG, **device_defaults(device_kind, precision, {})}


def compile_properties(user: Mapping[str, Any], cache_dir: Path) -> dict[str, Any]:
    """The properties to compile with: defaults, then CACHE_DIR, then the user's entries."""
    props: dict[str, Any] = {**DEFAULT_OV_CONFIG, "CACHE_DIR": str(cache_dir)}
    props.update(user)
    return props


def to_genai(
    config: GenerationConfig,
    base: openvino_genai.GenerationConfig,
    max_new_tokens: int,
) -> openvino_genai.GenerationConfig:
    """Fill ``base`` (the pipeline's own config: it carries the model's EOS/stop token ids)."""
    base.max_new_tokens = max_new_tokens
    base.apply_chat_template = False
    base.num_return_sequences = 1
    base.do_sample = config.do_sample
    base.repetition_penalty = float(config.repetition_penalty)
    if config.do_sample:
        base.temperature = float(config.temperature)
        base.top_p = float(config.top_p)
        if config.top_k > 0:
            base.top_k = config.top_k
        base.min_p = float(config.min_p)  # genai's sampler drops tokens under min_p x the top one (0 = off)
        base.rng_seed = sampling_seed(config)
    base.ignore_eos = config.ignore_eos
    base.min_new_tokens = max_new_tokens if config.ignore_eos else 0
    base.stop_strings = set(config.stop)
    base.include_stop_str_in_output = True
    base.structured_output_config = structured_output_config(config)
    return base


def structured_output_config(config: GenerationConfig) -> openvino_genai.StructuredOutputConfig | None:
    """genai's grammar for ``config.output_constraint`` (None for free text).

    A JSON Schema (``json_object`` is the schema ``{"type": "object"}``) is compiled here to a
    compact-JSON grammar (:mod:`phi3_openvino.json_grammar`, xgrammar) and handed over as EBNF, not
    as genai's ``json_schema``, whose grammar allows free whitespace; a regex must match the whole
    output, which is how XGrammar reads one. Which kinds an engine really offers is its declaration
    (``genai_engine.STRUCTURED_OUTPUT``): phi3 refuses the others before they get here.
    """
    constraint = config.output_constraint
    if constraint is None:
        return None
    import openvino_genai

    if constraint.kind == "regex":
        problem = non_ascii_class(constraint.spec)
        if problem:
            raise UnsupportedError(
                f"the genai engine cannot guarantee this regex: it uses {problem}, under which "
                "openvino-genai 2026.4.1 can emit bytes that are not UTF-8",
                hint="keep the pattern's classes ASCII-only, or use the optimum engine (-e optimum)",
            )
        return openvino_genai.StructuredOutputConfig(regex=constraint.spec)
    from phi3_openvino.json_grammar import schema_ebnf

    return openvino_genai.StructuredOutputConfig(grammar=schema_ebnf(constraint.spec))


__all__ = [
    "DEFAULT_OV_CONFIG",
    "compile_properties",
    "structured_output_config",
    "to_genai",
]
