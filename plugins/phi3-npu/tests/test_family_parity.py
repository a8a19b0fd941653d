"""The conformance kit's family parity suite (issue 9) on the genai engine, on the CPU override.

fp16 is the highest-fidelity NPU artifact (phi3-openvino's exporter with the NPU recipe, so its
RoPE tables are kept in f32 the same way); ``INFERENCE_PRECISION_HINT=f32`` makes the CPU plugin
compute in f32. The LongRoPE workarounds (no prefix cache, a fresh prefill at the switch) are
phi3-openvino's genai engine's, which this engine subclasses; their upstream strict xfails live in
phi3-openvino's ``tests/test_family_parity.py``.

The npu-library engine (intel-npu-acceleration-library 1.4.0, built offline by ``ci/setup.py`` in
this plugin's nox session) runs the same suite at fp16, its highest-fidelity precision. Its int8 and
int4 logits are bounded in ``tests/test_library.py`` (the engine has no teacher-forced logits call).
A generation that crosses the LongRoPE switch is exact thanks to the worker's re-prefill at the
switch (transformers' generate loses the context there: ``test_transformers_generate_still_
diverges_at_the_longrope_switch``). What is left differs by arithmetic, not by a bug: the library
computes in fp16 (it has no f32 mode), and five rows flip a near-tie late in the 32 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from _npu_common import F32

import phi3
from phi3.testing.parity import FamilyParitySuite

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class TestNPUGenAIFamilyParity(FamilyParitySuite):
    backend = "npu"
    engine = "genai"
    device = "CPU"
    precision = "fp16"
    backend_options: ClassVar[dict[str, Any]] = F32
    kl_bounds: ClassVar[dict[str, float]] = {"int8": 0.01, "int4": 0.3}
    """The NPU recipe's artifacts (int8 symmetric per channel; int4 symmetric, ratio 1.0), KL measured
    on the IR itself (``phi3_openvino.api.ir_logprobs``, f32 on the CPU): what the weights lose,
    whichever device runs them. Measured (benchmarks/FAMILY_OPENVINO.md's NPU recipe table): int8
    0.0012-0.0025, int4 0.10-0.17 nats/token."""

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        from phi3_openvino.api import ir_logprobs

        return ir_logprobs(model.artifact.path, input_ids)


CPU_HAS_AMX = Path("/proc/cpuinfo").is_file() and "amx_tile" in Path("/proc/cpuinfo").read_text()


@pytest.mark.usefixtures("library_installed")
class TestNPULibraryFamilyParity(FamilyParitySuite):
    backend = "npu"
    engine = "npu-library"
    device = "CPU"
    precision = "fp16"
    # Each of these diverges at the step whose fp32 top-1 margin is the smallest of its 32 (measured:
    # 0.028, 0.004, 0.004, 0.026 and 0.034 nats, against medians of 0.35-1.2): fp16 arithmetic flipping a
    # near-tie, not a layout bug (the same rows' earlier tokens, and every other row, are exact)
    known_divergences: ClassVar[dict[tuple[str, str], str]] = {
        ("phi3-mini-4k", "short"): "fp16 compute (intel-npu-acceleration-library 1.4.0 has no f32 mode) flips a "
        "0.028-nat near-tie at new token 19",
        ("phi3-mini-4k", "past_window"): "fp16 compute flips a 0.004-nat near-tie at new token 20",
        ("phi3-medium-128k", "longrope_decode"): "fp16 compute flips a 0.004-nat near-tie at new token 18",
        ("phi3.5-mini", "longrope_prompt"): "fp16 compute flips a 0.026-nat near-tie at new token 31",
        ("phi3.5-mini", "longrope_decode"): "fp16 compute flips a 0.034-nat near-tie at new token 15",
        **(
            {
                ("phi3-medium-128k", "longrope_prompt"): "on a CPU with AMX (the library is built with "
                "-march=native) fp16 compute flips this row at new token 20; exact on the AVX-512 machines the "
                "other rows were measured on (its margin there was not measured)"
            }
            if CPU_HAS_AMX
            else {}
        ),
    }
