"""Validating the backend options users pass (``-O group_size=64``), before any slow work.

Pure Python on purpose: :func:`phi3_openvino.plugin.phi3_quantize` checks options before importing
optimum/NNCF/torch (seconds), so a typo costs milliseconds, and ``phi3.hookspecs`` asks for a
``ConfigError`` "before heavy work".

Artifact options (they change the artifact's bytes, so phi3 puts them in the cache key):

``group_size``
    int4 only. Weights are quantized in groups of this many input channels. ``"auto"`` (the
    default) means the guide's 128 when it divides the model's widths, which it does for every
    released Phi-3/Phi-3.5/Phi-4-mini checkpoint, else the largest power of two that does (tiny
    test models). An explicit number that does not divide the widths is an error naming the sizes
    that would work. ``-1`` is per-channel quantization.
``ratio``
    int4 only. Share of the weights (by size) quantized to int4; the rest stay int8. Default 0.6.
``sym``
    int4 and int8. Symmetric quantization. Default: true for int4 (the guide's), false for int8
    (NNCF's and optimum-cli's default, which is more accurate per bit for int8).
``recipe``
    int4 only. A named set of the three above: ``guide`` (the default: the product guide's
    ``optimum-cli ... --weight-format int4 --group-size 128 --ratio 0.6 --sym``) or ``all-int4``
    (ratio 1.0: every weight int4, the NPU recipe; fewer bytes per token, a larger KL to fp32).
    Explicit ``group_size``/``ratio``/``sym`` override the recipe's value. ``benchmarks/TUNING.md``
    has the measurements behind the default; the manifest records the recipe used.

Load options: ``ov_config``, a mapping of OpenVINO properties passed to the compiler as given (over
phi3-openvino's defaults, see :mod:`phi3_openvino.config_mapping`); ``max_concurrent_generations``
(default 1): above 1 the genai engine runs that many generations at once with continuous batching
(:mod:`phi3_openvino.batching`); ``context_length``, the tokens the session holds
(:mod:`phi3_openvino.context`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError, ModelNotFoundError

PRECISIONS = ("int4", "int8", "fp16")
ARTIFACT_OPTIONS = ("group_size", "ratio", "sym", "recipe")
LOAD_OPTIONS = ("ov_config", "max_concurrent_generations", "context_length")

DEFAULT_INT4_GROUP_SIZE = 128
DEFAULT_INT4_RATIO = 0.6
DEFAULT_INT4_SYM = True
DEFAULT_INT8_SYM = False
AUTO = "auto"

INT4_RECIPES: dict[str, dict[str, Any]] = {
    "guide": {"group_size": AUTO, "ratio": DEFAULT_INT4_RATIO, "sym": DEFAULT_INT4_SYM},
    "all-int4": {"group_size": AUTO, "ratio": 1.0, "sym": True},
}
"""Named int4 recipes (see the module docstring)."""
DEFAULT_INT4_RECIPE = "guide"
"""Kept after benchmarks/TUNING.md: all-int4 was not measured faster across every repeat, and its KL is larger."""

_OPTIONS_BY_PRECISION = {"int4": {"group_size", "ratio", "sym", "recipe"}, "int8": {"sym"}, "fp16": set()}


@dataclass(frozen=True)
class ModelShape:
    """The widths that weight groups must divide, read from the checkpoint's ``config.json``."""

    hidden_size: int
    intermediate_size: int
    context_length: int | None

    @classmethod
    def from_checkpoint(cls, folder: Path) -> ModelShape:
        """Read ``config.json`` (already checked by phi3 to be a Phi-3)."""
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            hidden = int(config["hidden_size"])
            intermediate = int(config.get("intermediate_size") or hidden)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelNotFoundError(f"{folder / 'config.json'} has no usable hidden_size: {exc}") from None
        context = config.get("max_position_embeddings")
        return cls(hidden, intermediate, int(context) if context else None)


@dataclass(frozen=True)
class QuantSettings:
    """What :mod:`phi3_openvino.export` does, fully resolved (defaults applied, auto decided)."""

    precision: str
    bits: int | None
    """4 or 8 for weight compression, None for fp16 (no compression)."""
    sym: bool | None
    group_size: int | None
    ratio: float | None
    requested_group_size: int | str | None = None
    note: str = ""
    """Something worth telling the user (e.g. what ``auto`` picked); shown as progress."""
    recipe: str | None = None
    """int4: the named recipe the settings started from (explicit options may override parts)."""

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``quantization`` entry: what the artifact really holds."""
        data: dict[str, Any] = {"precision": self.precision}
        if self.bits is not None:
            data.update(bits=self.bits, sym=self.sym, group_size=self.group_size, ratio=self.ratio)
            if self.recipe is not None:
                data["recipe"] = self.recipe
            if self.requested_group_size is not None and self.requested_group_size != self.group_size:
                data["group_size_requested"] = self.requested_group_size
        return data


def working_group_sizes(shape: ModelShape) -> list[int]:
    """Power-of-two group sizes (16..256) that divide every width NNCF groups along."""
    width = math.gcd(shape.hidden_size, shape.intermediate_size)
    return [size for size in (16, 32, 64, 128, 256) if width % size == 0]


def _describe_widths(shape: ModelShape) -> str:
    if shape.intermediate_size % shape.hidden_size == 0:
        return f"hidden size {shape.hidden_size}"
    return f"hidden size {shape.hidden_size} and intermediate size {shape.intermediate_size}"


def _group_size(value: Any, shape: ModelShape) -> tuple[int, str]:
    sizes = working_group_sizes(shape)
    choices = ", ".join(str(s) for s in sizes)
    working = f"group sizes that work for this model: {choices + ', ' if choices else ''}-1 (per channel), or auto"
    if isinstance(value, str) and value.strip().lower() == AUTO:
        if DEFAULT_INT4_GROUP_SIZE in sizes:
            return DEFAULT_INT4_GROUP_SIZE, ""
        picked = sizes[-1] if sizes else -1
        return picked, (
            f"group_size auto: {DEFAULT_INT4_GROUP_SIZE} does not divide the model's "
            f"{_describe_widths(shape)}, using {picked}"
        )
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ConfigError(f"group_size must be a positive whole number, -1 or 'auto', got {value!r}", hint=working)
    if value != -1 and (shape.hidden_size % value or shape.intermediate_size % value):
        raise ConfigError(f"group_size {value} does not divide the model's {_describe_widths(shape)}", hint=working)
    return value, ""


def _ratio(value: Any) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"ratio must be a number in (0, 1] (the share of weights quantized to int4), got {value!r}")
    return float(value)


def _sym(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "sym", "asym"):
        return value.strip().lower() in ("true", "sym")
    if not isinstance(value, bool):
        raise ConfigError(f"sym must be true (symmetric) or false (asymmetric), got {value!r}")
    return value


def resolve_quantization(precision: str, options: Mapping[str, Any], shape: ModelShape) -> QuantSettings:
    """Check ``options`` for ``precision`` and apply the defaults; raise ConfigError on any problem."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"phi3-openvino cannot build precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    allowed = _OPTIONS_BY_PRECISION[precision]
    misplaced = sorted(set(options) - allowed)
    if misplaced:
        fits = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"option(s) {', '.join(misplaced)} do not apply to {precision}", hint=f"{precision} takes: {fits}"
        )
    if precision == "fp16":
        return QuantSettings(precision, None, None, None, None)
    if precision == "int8":
        sym = _sym(options["sym"]) if "sym" in options else DEFAULT_INT8_SYM
        return QuantSettings(precision, 8, sym, -1, 1.0)
    recipe = options.get("recipe", DEFAULT_INT4_RECIPE)
    if recipe not in INT4_RECIPES:
        raise ConfigError(
            f"recipe must be one of {', '.join(INT4_RECIPES)}, got {recipe!r}",
            hint="guide: the product guide's int4 (ratio 0.6); all-int4: every weight int4",
        )
    base = INT4_RECIPES[recipe]
    requested = options.get("group_size", base["group_size"])
    group_size, note = _group_size(requested, shape)
    ratio = _ratio(options["ratio"]) if "ratio" in options else float(base["ratio"])
    sym = _sym(options["sym"]) if "sym" in options else bool(base["sym"])
    return QuantSettings(precision, 4, sym, group_size, ratio, requested_group_size=requested, note=note, recipe=recipe)


_OV_VALUE_TYPES = (str, int, float, bool)


def resolve_max_concurrent(options: Mapping[str, Any]) -> int:
    """``max_concurrent_generations`` (default 1): above 1 the genai engine batches continuously."""
    value = options.get("max_concurrent_generations", 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
        raise ConfigError(
            f"max_concurrent_generations must be a whole number from 1 to 256, got {value!r}",
            hint="e.g. -O max_concurrent_generations=4",
        )
    return value


def resolve_ov_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``ov_config`` (or ``{}``), checked to be ``{PROPERTY: scalar}``."""
    value = options.get("ov_config")
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(
                "ov_config must be a mapping of OpenVINO properties",
                hint='e.g. -O \'ov_config={"INFERENCE_PRECISION_HINT": "f32"}\'',
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"ov_config must be a mapping of OpenVINO properties, got {type(value).__name__}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, _OV_VALUE_TYPES)]
    if bad:
        raise ConfigError(f"ov_config entries must map property names to strings or numbers; bad: {bad!r}")
    return dict(value)


__all__ = [
    "ARTIFACT_OPTIONS",
    "LOAD_OPTIONS",
    "PRECISIONS",
    "ModelShape",
    "QuantSettings",
    "resolve_max_concurrent",
    "resolve_ov_config",
    "resolve_quantization",
    "working_group_sizes",
]
