"""Which precision/execution-provider pairs we build, checked up front (the options' own values are
checked by phi3 against :mod:`phi3_dml.options`).

The model builder accepts every ``-p``/``-e`` pair, but some of them produce artifacts that do not
work, which a user would only find out after minutes of quantizing (checked with builder 0.18.0):

- ``bf16`` for cpu builds, then fails at load (``Could not find an implementation for Where(16)``);
  bf16 is a CUDA precision.
- ``fp32`` for dml builds an invalid graph (``Graph output (present.0.key) does not exist``).
- ``int8`` for dml is not a combination the builder supports (its own list: INT8 CPU/CUDA/WebGPU).

``fp16`` for cpu is not on the builder's list either, but it builds and runs correctly (greedy ids
equal fp32's) on onnxruntime-genai 0.13.1 and 0.18.0; it is allowed because it is the only way to
check an fp16 graph on a machine without a GPU, and it is slow on CPUs, which the docs say.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi3.errors import ConfigError

from phi3_dml.options import ARTIFACT_OPTIONS as ARTIFACT_SPECS
from phi3_dml.options import DEFAULT_BLOCK_SIZE, EXECUTION_PROVIDERS, QUANTIZED

PRECISIONS = ("int4", "int8", "fp16", "fp32", "bf16")
"""Everything the backend builds somewhere, best default first."""

SUPPORTED: dict[str, tuple[str, ...]] = {
    "cpu": ("int4", "int8", "fp16", "fp32"),
    "dml": ("int4", "fp16"),
    "cuda": ("int4", "int8", "fp16", "fp32", "bf16"),
}

WHY_NOT: dict[tuple[str, str], str] = {
    ("bf16", "cpu"): "the CPU execution provider has no bf16 kernels (such a model builds but fails to load)",
    ("bf16", "dml"): "DirectML has no bf16 support in the model builder",
    ("fp32", "dml"): "the model builder writes an invalid fp32 graph for DirectML",
    ("int8", "dml"): "the model builder has no int8 DirectML quantization",
}

ARTIFACT_OPTIONS = tuple(spec.name for spec in ARTIFACT_SPECS)
"""Backend options that shape the artifact (and so go into the cache key)."""


@dataclass(frozen=True)
class BuildPlan:
    """A validated build request: what the builder is called with."""

    precision: str
    execution_provider: str
    block_size: int | None
    accuracy_level: int | None
    lm_head: str | None = None
    """None: the builder's default (int4 like every MatMul); "int8": the LM head kept at int8."""

    def extra_options(self) -> dict[str, str]:
        """The builder's ``--extra_options`` (only for quantized precisions)."""
        options: dict[str, str] = {}
        if self.block_size is not None:
            options["block_size"] = str(self.block_size)
        if self.accuracy_level is not None:
            options["accuracy_level"] = str(self.accuracy_level)
        if self.lm_head == "int8":
            options["matmul_mixed_precision"] = "last_matmul:int8"
        return options


def plan_build(precision: str, options: Mapping[str, Any], default_provider: str) -> BuildPlan:
    """Check ``precision`` and the artifact options; raise ConfigError naming the fix."""
    unknown = sorted(set(options) - set(ARTIFACT_OPTIONS))
    if unknown:  # phi3 filters options already; this guards direct callers
        raise ConfigError(
            f"unknown build option(s) {', '.join(unknown)}",
            hint=f"the dml backend builds with: {', '.join(ARTIFACT_OPTIONS)}",
        )
    provider = str(options.get("execution_provider") or default_provider).lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"the dml backend has no precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
    if precision not in SUPPORTED[provider]:
        why = WHY_NOT.get((precision, provider), "the model builder does not support it")
        others = [ep for ep in EXECUTION_PROVIDERS if precision in SUPPORTED[ep]]
        raise ConfigError(
            f"precision {precision} cannot be built for execution_provider={provider}: {why}",
            hint=f"for {provider} use precision {' or '.join(SUPPORTED[provider])}"
            + (f"; {precision} works with execution_provider={' or '.join(others)}" if others else ""),
        )
    quantized = precision in QUANTIZED
    block_size = options.get("block_size", DEFAULT_BLOCK_SIZE) if quantized else None
    accuracy_level = options.get("accuracy_level") if quantized else None
    lm_head = options.get("lm_head") if precision == "int4" else None
    lm_head = None if lm_head == "int4" else lm_head  # int4 is the builder's default: the same build
    return BuildPlan(precision, provider, block_size, accuracy_level, lm_head)


__all__ = [
    "ARTIFACT_OPTIONS",
    "EXECUTION_PROVIDERS",
    "PRECISIONS",
    "SUPPORTED",
    "BuildPlan",
    "plan_build",
]
