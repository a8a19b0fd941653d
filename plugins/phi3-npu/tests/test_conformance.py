"""phi3's standard backend conformance suite, once per engine, on the explicit CPU override."""

from __future__ import annotations

import pytest

from phi3.testing.suite import BackendConformanceSuite


class TestGenAI(BackendConformanceSuite):
    backend = "npu"
    engine = "genai"
    device = "CPU"


@pytest.mark.usefixtures("library_installed")
class TestNpuLibrary(BackendConformanceSuite):
    backend = "npu"
    engine = "npu-library"
    device = "CPU"
