"""phi3's standard backend conformance suite, once per engine, on the real OpenVINO CPU plugin."""

from __future__ import annotations

from typing import Any, ClassVar

from phi3.testing.suite import BackendConformanceSuite

F32 = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}


class TestGenAI(BackendConformanceSuite):
    backend = "openvino"
    engine = "genai"
    device = "CPU"
    backend_options: ClassVar[dict[str, Any]] = F32


class TestOptimum(BackendConformanceSuite):
    backend = "openvino"
    engine = "optimum"
    device = "CPU"
    backend_options: ClassVar[dict[str, Any]] = F32
