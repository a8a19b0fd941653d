"""The options users pass to the NPU backend (``-O key=value``), checked before any slow work.

Pure Python on purpose: the hooks validate options before importing OpenVINO, optimum or torch,
so a typo costs milliseconds and ``phi3.hookspecs`` gets its ``ConfigError`` "before heavy work".

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

GENAI = "genai"
LIBRARY = "npu-library"
ENGINES = (GENAI, LIBRARY)
GENAI_FORMAT = "openvino-ir-npu"
LIBRARY_FORMAT = "hf-checkpoint-npu-library"
"""Artifact formats: each engine has its own, so their artifacts have their own cache keys."""
PRECISIONS = ("int4", "int8", "fp16")

ARTIFACT_OPTIONS = ("group_size",)
NPU_KNOBS = ("max_prompt_len", "min_response_len", "generate_hint", "prefill_hint")
LOAD_OPTIONS = (*NPU_KNOBS, "ov_config")

NPU_GROUP_SIZE = 128
CHANNEL_WISE = -1
AUTO = "auto"
DEFAULT_MAX_PROMPT_LEN = 1024
DEFAULT_MIN_RESPONSE_LEN = 128
"""OpenVINO GenAI's own defaults on the NPU; repeated here so the CPU override behaves the same."""
HINTS = {"generate_hint": ("FAST_COMPILE", "BEST_PERF"), "prefill_hint": ("DYNAMIC", "STATIC")}
PROPERTY_NAMES = {name: name.upper() for name in NPU_KNOBS}
"""phi3 option name -> OpenVINO GenAI property name."""


def _whole(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number of tokens >= 1, got {value!r}")
    return value


def resolve_group_size(engine: str, precision: str, options: Mapping[str, Any], widths: tuple[int, int]) -> int | None:
    """The int4 group size the NPU recipe uses (None where no group size applies).

    ``widths`` are the checkpoint's hidden and intermediate sizes.
    """
    requested = options.get("group_size", AUTO)
    if "group_size" in options and (engine != GENAI or precision != "int4"):
        raise ConfigError(
            f"group_size applies to engine {GENAI} with precision int4 only, not {engine} {precision}",
            hint="the npu-library engine always quantizes per channel",
        )
    if engine != GENAI or precision != "int4":
        return None
    divides = all(width % NPU_GROUP_SIZE == 0 for width in widths)
    if isinstance(requested, str) and requested.strip().lower() == AUTO:
        return NPU_GROUP_SIZE if divides else CHANNEL_WISE
    if isinstance(requested, str) and requested.strip().lstrip("-").isdigit():
        requested = int(requested)
    if requested not in (NPU_GROUP_SIZE, CHANNEL_WISE) or isinstance(requested, bool):
        raise ConfigError(
            f"group_size must be {NPU_GROUP_SIZE}, {CHANNEL_WISE} (per channel) or auto for the NPU, got {requested!r}",
            hint="the NPU compiler supports int4 weights in groups of 128 or per output channel",
        )
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


def _ov_config(value: Any) -> dict[str, Any]:
    """phi3-openvino's ``ov_config`` check, plus: NPU knobs belong in phi3 options, not in ov_config."""
    from phi3_openvino.api import resolve_ov_config

    checked = resolve_ov_config({"ov_config": value})
    knobs = sorted(name for name in checked if name.upper() in PROPERTY_NAMES.values())
    if knobs:
        spelled = ", ".join(f"-O {name.lower()}=..." for name in knobs)
        raise ConfigError(f"set {', '.join(knobs)} as phi3 options, not inside ov_config", hint=f"use {spelled}")
    return checked


def resolve_load_options(engine: str, options: Mapping[str, Any]) -> GenAISettings | None:
    """Check the load options for ``engine``; the genai settings, or None for the library engine."""
    if engine == LIBRARY:
        if options:
            raise ConfigError(
                f"engine {LIBRARY} takes no load options, got {', '.join(sorted(options))}",
                hint=f"{', '.join(LOAD_OPTIONS)} configure the {GENAI} engine",
            )
        return None
    hints: dict[str, str] = {}
    for name, allowed in HINTS.items():
        if name in options:
            value = str(options[name]).strip().upper()
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {options[name]!r}")
            hints[PROPERTY_NAMES[name]] = value
    return GenAISettings(
        max_prompt_len=_whole("max_prompt_len", options.get("max_prompt_len", DEFAULT_MAX_PROMPT_LEN)),
        min_response_len=_whole("min_response_len", options.get("min_response_len", DEFAULT_MIN_RESPONSE_LEN)),
        hints=hints,
        ov_config=_ov_config(options.get("ov_config")),
    )


__all__ = [
    "ARTIFACT_OPTIONS",
    "ENGINES",
    "GENAI",
    "GENAI_FORMAT",
    "LIBRARY",
    "LIBRARY_FORMAT",
    "LOAD_OPTIONS",
    "PRECISIONS",
    "GenAISettings",
    "resolve_group_size",
    "resolve_load_options",
]
