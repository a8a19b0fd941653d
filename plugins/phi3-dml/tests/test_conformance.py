"""phi3's standard backend conformance suite on the real onnxruntime-genai CPU provider."""

from __future__ import annotations

from phi3.testing.suite import BackendConformanceSuite


class TestDml(BackendConformanceSuite):
    backend = "dml"
    engine = None
    device = "cpu"
    # bf16 is advertised (for execution_provider=cuda) but refused for cpu builds: see test_errors.
    precisions = ("int4", "int8", "fp16", "fp32")
