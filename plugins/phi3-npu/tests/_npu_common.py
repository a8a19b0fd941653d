"""Constants the test modules share (a uniquely named module, unlike ``conftest``)."""

from __future__ import annotations

from typing import Any

PROMPT = "The quick brown fox"
PARITY_PROMPT = "def main():"
"""The tiny model's random weights give a near tie (0.0006 logit gap) at step 16 of ``PROMPT``, below
fp16's own rounding (~0.003), so greedy ids are compared on this prompt; logits on both."""
F32: dict[str, Any] = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
"""Exact fp32 on OpenVINO's CPU plugin (its default is bf16 on AVX512-BF16 machines like CI's)."""
GENAI = {"backend": "npu", "engine": "genai", "device": "CPU"}
LIBRARY = {"backend": "npu", "engine": "npu-library", "device": "CPU"}
