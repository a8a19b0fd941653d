"""The family parity suite (:mod:`phi3.testing.parity`) on onnxruntime-genai's CPU provider.

Greedy ids must equal the transformers fp32 reference on every catalogue layout. Artifacts are
built once per session (the session-scoped ``PHI3_HOME``); refusals fail before any build.
What is refused or diverges, and why, is the README's "Family parity" table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import phi3
from phi3.testing.parity import FamilyParitySuite

from phi3_dml.api import teacher_forced_logprobs as runtime_logprobs

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


# longrope_decode is exact: phi3_dml.generate recomputes the sequence once where generation crosses
# original_max_position_embeddings (onnxruntime-genai 0.18.0's LongRoPE graph would otherwise mix
# short- and long-factor keys); tests/test_upstream_workarounds.py tracks the runtime without it.


class TestDmlFamilyParityFp32(FamilyParitySuite):
    """fp32, cpu graph: the highest-fidelity precision."""

    backend = "dml"
    device = "cpu"
    precision = "fp32"
    backend_options: ClassVar[dict[str, object]] = {"execution_provider": "cpu"}
    refusals: ClassVar[dict[tuple[str, str], type[phi3.Phi3Error]]] = {
        # tiny Phi-4-mini rotates 24 of 32 dims: 12 is not a multiple of 8, which onnxruntime's CPU
        # GroupQueryAttention needs for its fused rotary (phi3_dml.builder.check_fused_rotary); real
        # Phi-4-mini (48) is not refused
        ("phi4-mini", "fp32"): phi3.PrecisionNotSupportedError,
        ("phi4-mini", "int8"): phi3.PrecisionNotSupportedError,
        ("phi4-mini", "int4"): phi3.PrecisionNotSupportedError,
    }
    # mean nats/token, teacher-forced, cpu graphs (int4: block 32, accuracy_level 4). Measured on the
    # tiny models: int8 0.0006-0.0014, int4 0.08-0.18; fp32 checks runtime_logprobs() itself (~0).
    kl_bounds: ClassVar[dict[str, float]] = {"fp32": 1e-4, "int8": 0.01, "int4": 0.4}

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        return runtime_logprobs(model, input_ids)


class TestDmlFamilyParityFp16(FamilyParitySuite):
    """fp16, dml graph (DirectML's precision) under the CPU provider."""

    backend = "dml"
    device = "cpu"
    precision = "fp16"
    backend_options: ClassVar[dict[str, object]] = {"execution_provider": "dml"}


class TestDmlFamilyParityFp16CpuGraph(FamilyParitySuite):
    """fp16, cpu graph: refused where builder 0.18.0's fp16 cpu graph is wrong (GQA, sliding window)."""

    backend = "dml"
    device = "cpu"
    precision = "fp16"
    backend_options: ClassVar[dict[str, object]] = {"execution_provider": "cpu"}
    # phi3_dml.builder.check_fp16_cpu_layout: MultiHeadAttention + Tile graph (builder 0.18.0)
    refusals: ClassVar[dict[tuple[str, str], type[phi3.Phi3Error]]] = {
        ("phi3-mini-4k", "fp16"): phi3.PrecisionNotSupportedError,  # window ignored
        ("phi3-medium-4k", "fp16"): phi3.PrecisionNotSupportedError,  # GQA crash, window ignored
        ("phi3-medium-128k", "fp16"): phi3.PrecisionNotSupportedError,  # GQA crash
        ("phi4-mini", "fp16"): phi3.PrecisionNotSupportedError,  # GQA crash
    }


class TestDmlFamilyPhi4MiniDmlGraphKL(FamilyParitySuite):
    """Phi-4-mini's quantized row: cpu graphs refuse the tiny layout, so int4 is KL-checked on the dml
    graph (RoPE not fused) under the CPU provider; its greedy rows repeat the fp16 class from the cache."""

    backend = "dml"
    device = "cpu"
    precision = "fp16"
    variants = ("phi4-mini",)
    backend_options: ClassVar[dict[str, object]] = {"execution_provider": "dml"}
    # measured: fp16 0.00001, int4 0.26 (the tied head's logits are larger, so is the KL)
    kl_bounds: ClassVar[dict[str, float]] = {"fp16": 0.01, "int4": 0.6}

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        return runtime_logprobs(model, input_ids)
