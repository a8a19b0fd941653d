"""The conformance kit's family parity suite (issue 9) on both engines, fp16 IR run in f32.

fp16 is phi3-openvino's highest-fidelity artifact; ``INFERENCE_PRECISION_HINT=f32`` makes the CPU
plugin compute in f32 (its default on AVX512-BF16 CPUs is bf16), so greedy ids must equal the
transformers fp32 reference on every family layout. Artifacts go to the session's phi3 cache, keyed
by the checkpoint's content, so both engines share one export per variant.
"""

from __future__ import annotations

from typing import Any, ClassVar

from _ov_common import F32

from phi3.testing.parity import FamilyParitySuite


class TestGenAIFamilyParity(FamilyParitySuite):
    backend = "openvino"
    engine = "genai"
    device = "CPU"
    precision = "fp16"
    backend_options: ClassVar[dict[str, Any]] = F32


class TestOptimumFamilyParity(FamilyParitySuite):
    backend = "openvino"
    engine = "optimum"
    device = "CPU"
    precision = "fp16"
    backend_options: ClassVar[dict[str, Any]] = F32
