"""Shared fixtures: phi3's conformance fixtures plus artifacts built once per test session.

Exporting even the tiny model takes ~10-15 s (torch tracing), so every test that needs an artifact
gets it from the session's phi3 cache (``phi3_home`` is session-scoped): each precision is
exported once, whichever test asks first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _ov_common import F32

import phi3
from phi3.vendor_compat import hide_broken_torchvision

# transformers (used by phi3.testing to build the tiny model and the fp32 reference) breaks on the
# CUDA-only torchvision pip installs next to a CPU torch; hide it before anything imports it.
hide_broken_torchvision()

pytest_plugins = ["phi3.testing.fixtures"]


@pytest.fixture(scope="session")
def artifacts(tiny_phi3: Path) -> dict[str, phi3.Artifact]:
    """The three precisions of the tiny model, built (once) into the session's phi3 cache."""
    return {p: phi3.quantize(tiny_phi3, backend="openvino", precision=p) for p in ("int4", "int8", "fp16")}


@pytest.fixture
def genai_int8(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> Iterator[phi3.Model]:
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine="genai", **F32) as model:
        yield model
