"""The backend options users pass (``-O group_size=64``), declared as typed specs that phi3 checks.

Pure Python on purpose: ``phi3 list-backends`` reads :data:`OPTIONS` without importing OpenVINO,
and phi3-core validates every value against these specs (:mod:`phi3.options`: type, range,
choices, the precision an option applies to) before any model is resolved or any hook runs, so a
typo costs milliseconds and one line naming the option. What needs the model stays here: a group
size must divide the model's widths (:func:`resolve_quantization`), a context must fit the model
and the memory (:mod:`phi3_openvino.context`).

Artifact options (they change the artifact's bytes, so phi3 puts them in the cache key):

``group_size``
    int4 only. Weights are quantized in groups of this many input channels. ``"auto"`` (the
    default) means the recipe's group size (64 for ``accurate`` and ``fast``, 128 for ``guide`` and ``all-int4``)
    when it divides the model's widths, which it does for every released Phi-3/Phi-3.5/Phi-4-mini
    checkpoint, else the largest power of two below it that does (tiny test models). An explicit
    number that does not divide the widths is an error naming the sizes that would work. ``-1`` is
    per-channel quantization.
``ratio``
    int4 only. Share of the weights (by size) quantized to int4; the rest stay int8. Default 0.6.
``sym``
    int4 and int8. Symmetric quantization. Default: true for int4 (every recipe's), false
    for int8 (NNCF's and optimum-cli's default, which is more accurate per bit for int8).
``recipe``
    int4 only. A named set of the three above: ``accurate`` (the default: group 64, symmetric,
    ratio 0.6), ``guide`` (the product guide's ``optimum-cli ... --weight-format int4 --group-size 128
    --ratio 0.6 --sym``), ``fast`` (the speed-first recipe: every weight int4 in groups of 64, symmetric;
    in ``benchmarks/TUNING.md`` it decoded faster than ``accurate`` in every repeat, and its KL to fp32
    sits between ``accurate``'s and ``all-int4``'s, below llama.cpp Q4_0's in ``benchmarks/RESULTS.md``)
    or ``all-int4`` (ratio 1.0 in groups of 128: the NPU recipe; fewer bytes per token still, the largest
    KL to fp32). Explicit ``group_size``/``ratio``/``sym`` override the recipe's
    value; the manifest records the recipe used. ``accurate`` is the default because on the
    Phi-3-mini-shaped benchmark model its teacher-forced KL to fp32 was about 12 % below ``guide``'s
    at a decode speed that did not measurably differ (its extra scales add 1 % of bytes);
    ``benchmarks/RESULTS.md`` has the run. Asymmetric int4 was lower still there, but 7x higher on
    the tiny Phi-4-mini layout (tied embeddings), so it is not a default.

Load options: ``ov_config``, a mapping of OpenVINO properties passed to the compiler as given (over
phi3-openvino's defaults, see :mod:`phi3_openvino.config_mapping`); ``max_concurrent_generations``
(default 1): above 1 the genai engine runs that many generations at once with continuous batching
(:mod:`phi3_openvino.batching`); ``context_length``, the tokens the session holds
(:mod:`phi3_openvino.context`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError, ModelNotFoundError
from phi3.options import check_value
from phi3.types import OptionSpec

PRECISIONS = ("int4", "int8", "fp16")

DEFAULT_INT4_GROUP_SIZE = 128
DEFAULT_INT4_RATIO = 0.6
DEFAULT_INT8_SYM = False
AUTO = "auto"

INT4_RECIPES: dict[str, dict[str, Any]] = {
    "accurate": {"group_size": AUTO, "auto_group_size": 64, "ratio": DEFAULT_INT4_RATIO, "sym": True},
    "guide": {"group_size": AUTO, "auto_group_size": DEFAULT_INT4_GROUP_SIZE, "ratio": DEFAULT_INT4_RATIO, "sym": True},
    "fast": {"group_size": AUTO, "auto_group_size": 64, "ratio": 1.0, "sym": True},
    "all-int4": {"group_size": AUTO, "auto_group_size": DEFAULT_INT4_GROUP_SIZE, "ratio": 1.0, "sym": True},
}
"""Named int4 recipes (see the module docstring); ``auto_group_size`` is what ``group_size="auto"`` aims for."""
DEFAULT_INT4_RECIPE = "accurate"
"""The lowest KL to fp32 at guide's speed (see the module docstring); all-int4 was not measured faster than guide
across every repeat of benchmarks/TUNING.md, and its KL is larger."""

MAX_CONCURRENT_LIMIT = 256

OV_CONFIG = OptionSpec(
    "ov_config",
    "mapping",
    "OpenVINO compile properties (PROPERTY: value), over phi3-openvino's defaults",
)
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "group_size",
        "int",
        "input channels per int4 quantization group; auto: 128 where it divides the model's widths",
        default=AUTO,
        min=1,
        choices=(AUTO, -1),
        artifact=True,
        precisions=("int4",),
    ),
    OptionSpec(
        "ratio",
        "float",
        "share of the weights quantized to int4 (the rest int8)",
        default=DEFAULT_INT4_RATIO,
        min=0,
        max=1,
        exclusive_min=True,
        artifact=True,
        precisions=("int4",),
    ),
    OptionSpec(
        "sym",
        "bool",
        "symmetric quantization (default: true for int4, false for int8)",
        aliases={"sym": True, "asym": False},
        artifact=True,
        precisions=("int4", "int8"),
    ),
    OptionSpec(
        "recipe",
        "choice",
        "accurate: group 64, symmetric, ratio 0.6; guide: the product guide's (group 128, symmetric, ratio 0.6);"
        " fast: every weight int4, group 64 (speed first); all-int4: every weight int4, group 128 (the NPU recipe)",
        default=DEFAULT_INT4_RECIPE,
        choices=tuple(INT4_RECIPES),
        artifact=True,
        precisions=("int4",),
    ),
    OV_CONFIG,
    OptionSpec(
        "max_concurrent_generations",
        "int",
        "generations run at once; above 1 the genai engine batches continuously",
        default=1,
        min=1,
        max=MAX_CONCURRENT_LIMIT,
    ),
    OptionSpec(
        "context_length",
        "int",
        "tokens the session holds (max: the model's whole context)",
        min=2,
        choices=("max",),
    ),
)
"""Every option phi3-openvino takes, for ``BackendInfo.options`` (phi3 validates them)."""
ARTIFACT_OPTIONS = tuple(spec.name for spec in OPTIONS if spec.artifact)
LOAD_OPTIONS = tuple(spec.name for spec in OPTIONS if not spec.artifact)


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


def _group_size(value: int | str, shape: ModelShape, aim: int = DEFAULT_INT4_GROUP_SIZE) -> tuple[int, str]:
    """The group size for ``value`` (already a checked option: a whole number >= 1, -1 or "auto", which
    means ``aim`` when it divides the model's widths, else the largest working size below it)."""
    sizes = working_group_sizes(shape)
    choices = ", ".join(str(s) for s in sizes)
    working = f"group sizes that work for this model: {choices + ', ' if choices else ''}-1 (per channel), or auto"
    if value == AUTO:
        if aim in sizes:
            return aim, ""
        below = [size for size in sizes if size < aim]
        picked = below[-1] if below else -1
        return picked, f"group_size auto: {aim} does not divide the model's {_describe_widths(shape)}, using {picked}"
    assert isinstance(value, int)
    if value != -1 and (shape.hidden_size % value or shape.intermediate_size % value):
        raise ConfigError(f"group_size {value} does not divide the model's {_describe_widths(shape)}", hint=working)
    return value, ""


def checked(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` coerced by phi3-core's validator against :data:`OPTIONS` (unknown names kept as given).

    phi3 has already done this for options that came through ``phi3.load``/``phi3.quantize``; it is
    idempotent, and makes a direct caller (phi3-npu through :mod:`phi3_openvino.api`) get the same
    checks and the same one-line errors.
    """
    specs = {spec.name: spec for spec in OPTIONS}
    return {k: check_value("openvino", specs[k], v) if k in specs else v for k, v in options.items()}


def resolve_quantization(precision: str, options: Mapping[str, Any], shape: ModelShape) -> QuantSettings:
    """The settings for ``precision`` with the defaults applied; ConfigError where the model refuses them.

    ``options`` are the artifact options phi3 has checked against :data:`OPTIONS` (type, range,
    the precision each applies to); what is left to check needs the model (the group size).
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"phi3-openvino cannot build precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    values = checked(options)
    if precision == "fp16":
        return QuantSettings(precision, None, None, None, None)
    if precision == "int8":
        return QuantSettings(precision, 8, bool(values.get("sym", DEFAULT_INT8_SYM)), -1, 1.0)
    recipe = str(values.get("recipe", DEFAULT_INT4_RECIPE))
    base = INT4_RECIPES[recipe]
    requested = values.get("group_size", base["group_size"])
    group_size, note = _group_size(requested, shape, base["auto_group_size"])
    ratio = float(values.get("ratio", base["ratio"]))
    sym = bool(values.get("sym", base["sym"]))
    return QuantSettings(precision, 4, sym, group_size, ratio, requested_group_size=requested, note=note, recipe=recipe)


def resolve_max_concurrent(options: Mapping[str, Any]) -> int:
    """``max_concurrent_generations`` (default 1): above 1 the genai engine batches continuously."""
    return int(checked(options).get("max_concurrent_generations", 1))


def resolve_ov_config(options: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``ov_config`` (or ``{}``), checked by phi3-core to be ``{PROPERTY: scalar}``."""
    value = checked(options).get("ov_config")
    return {} if value is None else dict(value)


__all__ = [
    "ARTIFACT_OPTIONS",
    "LOAD_OPTIONS",
    "OPTIONS",
    "OV_CONFIG",
    "PRECISIONS",
    "ModelShape",
    "QuantSettings",
    "checked",
    "resolve_max_concurrent",
    "resolve_ov_config",
    "resolve_quantization",
    "working_group_sizes",
]
