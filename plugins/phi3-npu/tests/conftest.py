"""Shared fixtures: phi3's conformance fixtures, plus helpers every test module uses.

Artifacts are built on demand into the session's phi3 cache (``phi3_home`` is session-scoped), so
each (engine, precision) is exported or staged once, whichever test asks first. Everything runs on
the explicit ``CPU`` override: these machines have no NPU, and that is also what users without one
must type.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3.vendor_compat import hide_broken_torchvision

# transformers (used by phi3.testing for the tiny model and the fp32 reference) breaks on the
# CUDA-only torchvision pip installs next to a CPU torch; hide it before anything imports it.
hide_broken_torchvision()

pytest_plugins = ["phi3.testing.fixtures"]


@pytest.fixture(scope="session")
def library_installed() -> None:
    """Skip nothing silently: the library is part of this plugin's CI environment (ci/setup.py)."""
    from phi3.probing import module_available

    assert module_available("intel_npu_acceleration_library"), (
        "intel-npu-acceleration-library is not installed: run python plugins/phi3-npu/ci/setup.py first"
    )


@pytest.fixture(scope="session")
def tiny_phi3_128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Phi-3 whose widths (128, 256) admit the NPU's int4 group size 128."""
    from phi3.testing.tiny_model import make_tiny_phi3

    return make_tiny_phi3(tmp_path_factory.mktemp("models") / "tiny-phi3-128", hidden_size=128, intermediate_size=256)
