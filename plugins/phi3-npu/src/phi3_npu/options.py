"""The options users pass to the NPU backend (``-O key=value``), declared as typed specs phi3 checks.

Pure Python on purpose: ``phi3 list-backends`` reads :data:`OPTIONS` without importing OpenVINO,
and phi3-core validates every value against them (type, range, choices, the engine and precision
each applies to; :mod:`phi3.options`) before any hook runs, so a typo costs milliseconds. What
needs the model or several options at once stays here (a group size of 128 must divide the
model's widths; an NPU knob has one spelling, not a second one inside ``ov_config``).

Artifact option (part of the cache key):

``group_size``
    ``genai`` + int4 only. The NPU recipe quantizes int4 weights symmetrically, all of them
    (ratio 1.0), either in groups of 128 input channels or per output channel (``-1``); the NPU
    compiler supports those two layouts. ``auto`` (default): 128 when it divides the model's
    hidden and intermediate sizes (every released Phi-3), else ``-1`` (tiny test models).

Load options (``genai`` only; the NPU's static-shape pipeline is configured at compile time):

``max_prompt_len`` / ``min_response_len``
    The NPU compiles the model for prompts of at most ``MAX_PROMPT_LEN`` tokens (default 1024) and
    a KV cache of ``MAX_PROMPT_LEN + MIN_RESPONSE_LEN`` (default +128). A longer prompt is refused
    before it runs, naming the limit; other runtimes silently return garbage there.
``generate_hint``
    ``FAST_COMPILE`` (OpenVINO's default) or ``BEST_PERF``: how hard the NPU compiler optimizes
    the decode model.
``prefill_hint``
    ``DYNAMIC`` or ``STATIC``: the prefill model's shape strategy.
``ov_config``
    Further OpenVINO properties passed as given (e.g. ``{"INFERENCE_PRECISION_HINT": "f32"}`` for
    exact fp32 on the CPU override). ``CACHE_DIR`` defaults to phi3's cache; set it here to move
    it, or to ``""`` to turn the compiled-blob cache off. The NPU knobs above are refused here so
    that each has one spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phi3.errors import ConfigError
from phi3.options import check_value
from phi3.types import ConstraintKind, OptionSpec

GENAI = "genai"
LIBRARY = "npu-library"
ENGINES = (GENAI, LIBRARY)
GENAI_FORMAT = "openvino-ir-npu"
LIBRARY_FORMAT = "hf-checkpoint-npu-library"
"""Artifact formats: each engine has its own, so their artifacts have their own cache keys."""
PRECISIONS = ("int4", "int8", "fp16")
GENAI_STRUCTURED_OUTPUT: tuple[ConstraintKind, ...] = ("regex",)
"""What the genai engine enforces on the CPU override: phi3-openvino's genai engine declares the
same (JSON is refused there, see phi3-openvino's README). A session on a real NPU claims nothing."""

NPU_KNOBS = ("max_prompt_len", "min_response_len", "generate_hint", "prefill_hint")

NPU_GROUP_SIZE = 128
CHANNEL_WISE = -1
AUTO = "auto"
DEFAULT_MAX_PROMPT_LEN = 1024
DEFAULT_MIN_RESPONSE_LEN = 128
"""OpenVINO GenAI's own defaults on the NPU; repeated here so the CPU override behaves the same."""
HINTS = {"generate_hint": ("FAST_COMPILE", "BEST_PERF"), "prefill_hint": ("DYNAMIC", "STATIC")}
PROPERTY_NAMES = {name: name.upper() for name in NPU_KNOBS}
"""phi3 option name -> OpenVINO GenAI property name."""

_GENAI_ONLY = (GENAI,)
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "group_size",
        "choice",
        "int4 weights in groups of 128 input channels or per output channel (-1), what the NPU compiler "
        "supports; auto: 128 where it divides the model's widths",
        default=AUTO,
        choices=(AUTO, NPU_GROUP_SIZE, CHANNEL_WISE),
        artifact=True,
        engines=_GENAI_ONLY,
        precisions=("int4",),
    ),
    OptionSpec(
        "max_prompt_len",
        "int",
        "longest prompt the NPU pipeline is compiled for (MAX_PROMPT_LEN)",
        default=DEFAULT_MAX_PROMPT_LEN,
        min=1,
        engines=_GENAI_ONLY,
    ),
    OptionSpec(
        "min_response_len",
        "int",
        "tokens the NPU's KV cache holds beyond the prompt (MIN_RESPONSE_LEN)",
        default=DEFAULT_MIN_RESPONSE_LEN,
        min=1,
        engines=_GENAI_ONLY,
    ),
    OptionSpec(
        "generate_hint",
        "choice",
        "how hard the NPU compiler optimizes the decode model",
        default="FAST_COMPILE",
        choices=HINTS["generate_hint"],
        engines=_GENAI_ONLY,
    ),
    OptionSpec(
        "prefill_hint",
        "choice",
        "the prefill model's shape strategy",
        choices=HINTS["prefill_hint"],
        engines=_GENAI_ONLY,
    ),
    OptionSpec(
        "ov_config",
        "mapping",
        "further OpenVINO properties (PROPERTY: value); CACHE_DIR defaults to phi3's cache",
        engines=_GENAI_ONLY,
    ),
)
"""Every option phi3-npu takes, for ``BackendInfo.options`` (phi3 validates them)."""
ARTIFACT_OPTIONS = tuple(spec.name for spec in OPTIONS if spec.artifact)
LOAD_OPTIONS = tuple(spec.name for spec in OPTIONS if not spec.artifact)


def checked(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` coerced by phi3-core's validator against :data:`OPTIONS` (idempotent: phi3 has
    done it for options that came through ``phi3.load``/``phi3.quantize``)."""
    specs = {spec.name: spec for spec in OPTIONS}
    return {k: check_value("npu", specs[k], v) if k in specs else v for k, v in options.items()}


def resolve_group_size(engine: str, precision: str, options: Mapping[str, Any], widths: tuple[int, int]) -> int | None:
    """The int4 group size the NPU recipe uses (None where no group size applies).

    ``options`` are the artifact options (``group_size`` checked by phi3 against its spec: auto,
    128 or -1, genai + int4 only); ``widths`` are the checkpoint's hidden and intermediate sizes.
    """
    if engine != GENAI or precision != "int4":
        return None
    requested = checked(options).get("group_size", AUTO)
    divides = all(width % NPU_GROUP_SIZE == 0 for width in widths)
    if requested == AUTO:
        return NPU_GROUP_SIZE if divides else CHANNEL_WISE
    if requested == NPU_GROUP_SIZE and not divides:
        raise ConfigError(
            f"group_size {NPU_GROUP_SIZE} does not divide the model's widths {widths[0]} and {widths[1]}",
            hint="use group_size=-1 (per channel) or auto",
        )
    return int(requested)


@dataclass(frozen=True)
class GenAISettings:
    """What the genai engine compiles with: the NPU knobs (defaults applied) and other properties."""

    max_prompt_len: int = DEFAULT_MAX_PROMPT_LEN
    min_response_len: int = DEFAULT_MIN_RESPONSE_LEN
    hints: Mapping[str, str] = field(default_factory=dict)
    """``{"GENERATE_HINT": ..., "PREFILL_HINT": ...}`` for the hints the user set (else OpenVINO's default)."""
    ov_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kv_cache_len(self) -> int:
        """Tokens the NPU's KV cache holds: prompt plus answer must fit in it."""
        return self.max_prompt_len + self.min_response_len

    def npu_properties(self) -> dict[str, Any]:
        """The NPU-only properties (refused by the CPU plugin, so never sent to it)."""
        return {"MAX_PROMPT_LEN": self.max_prompt_len, "MIN_RESPONSE_LEN": self.min_response_len, **self.hints}


def _ov_config(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checked ``ov_config``; NPU knobs belong in phi3 options (one spelling each), not in it."""
    config = dict(value or {})
    knobs = sorted(name for name in config if name.upper() in PROPERTY_NAMES.values())
    if knobs:
        spelled = ", ".join(f"-O {name.lower()}=..." for name in knobs)
        raise ConfigError(f"set {', '.join(knobs)} as phi3 options, not inside ov_config", hint=f"use {spelled}")
    return config


def resolve_load_options(engine: str, options: Mapping[str, Any]) -> GenAISettings | None:
    """The genai settings from the load options (checked by phi3 against :data:`OPTIONS`, which
    scopes every one to the genai engine), or None for the library engine."""
    if engine == LIBRARY:
        return None
    values = checked(options)
    hints = {PROPERTY_NAMES[name]: str(values[name]) for name in HINTS if name in values}
    return GenAISettings(
        max_prompt_len=int(values.get("max_prompt_len", DEFAULT_MAX_PROMPT_LEN)),
        min_response_len=int(values.get("min_response_len", DEFAULT_MIN_RESPONSE_LEN)),
        hints=hints,
        ov_config=_ov_config(values.get("ov_config")),
    )


__all__ = [
    "ARTIFACT_OPTIONS",
    "ENGINES",
    "GENAI",
    "GENAI_FORMAT",
    "GENAI_STRUCTURED_OUTPUT",
    "LIBRARY",
    "LIBRARY_FORMAT",
    "LOAD_OPTIONS",
    "OPTIONS",
    "PRECISIONS",
    "GenAISettings",
    "checked",
    "resolve_group_size",
    "resolve_load_options",
]
