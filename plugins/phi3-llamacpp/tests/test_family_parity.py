"""The family parity suite (:mod:`phi3.testing.parity`) on llama.cpp's CPU backend, F32 GGUFs.

Greedy ids must equal the transformers fp32 reference on every catalogue layout, except where
llama.cpp itself computes something else (strict xfails below, each naming the upstream
behaviour and version; the README's "Family parity" table lists them). Prompts past a sliding
window are refused: llama.cpp has no sliding window, so a session's context stops at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import phi3
from phi3.testing.parity import FamilyParitySuite
from phi3_llamacpp.api import prefill_logprobs

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_LONGROPE_BY_CONTEXT = (
    "llama.cpp (llama-cpp-python 0.3.36) picks LongRoPE's long factors for every position when the "
    "allocated context exceeds original_max_position_embeddings (llama_model::get_rope_factors), and it "
    "pads every context to a multiple of 256 > the tiny models' 64: transformers uses the short factors "
    "until the sequence passes 64"
)
_LONGROPE_VARIANTS = ("phi3-mini-128k", "phi3-medium-128k", "phi3.5-mini", "phi4-mini")


class TestLlamaCppFamilyParity(FamilyParitySuite):
    backend = "llamacpp"
    device = "CPU"
    precision = "fp32"
    # llama.cpp (llama-cpp-python 0.3.36) disables Phi-3's sliding window (models/phi3.cpp: "Phi SWA is
    # currently disabled", ggml-org/llama.cpp#13676): the session's context stops at the window instead
    # (tests/test_units.py has the strict xfail that turns red when llama.cpp applies the window)
    case_refusals: ClassVar[dict[tuple[str, str], type[phi3.Phi3Error]]] = {
        ("phi3-mini-4k", "past_window"): phi3.PromptTooLongError,
        ("phi3-medium-4k", "past_window"): phi3.PromptTooLongError,
    }
    known_divergences: ClassVar[dict[tuple[str, str], str]] = {
        **{(name, "short"): _LONGROPE_BY_CONTEXT for name in _LONGROPE_VARIANTS},
        **{(name, "longrope_decode"): _LONGROPE_BY_CONTEXT for name in _LONGROPE_VARIANTS},
    }
    # mean nats/token, teacher-forced. Measured on the tiny models: fp32 ~1e-6 (checks prefill_logprobs()
    # itself), int8 Q8_0 0.0008-0.0014, int4 Q4_0 0.06-0.23
    kl_bounds: ClassVar[dict[str, float]] = {"fp32": 1e-4, "int8": 0.005, "int4": 0.4}

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        return prefill_logprobs(model, input_ids)
