"""Constants the test modules share (a uniquely named module, unlike ``conftest``)."""

from __future__ import annotations

from typing import Any

F32: dict[str, Any] = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
"""Exact fp32 inference on the CPU (its default is bf16 on AVX512-BF16 machines like CI's)."""

PROMPT = "The quick brown fox"
