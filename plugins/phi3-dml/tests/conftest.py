"""Shared fixtures: phi3's conformance fixtures plus artifacts built once per test session.

Every build of the tiny model costs ~8 s (the builder child process imports torch), so tests get
artifacts from the session's phi3 cache (``phi3_home`` is session-scoped): each precision/provider
pair is built once, by whichever test asks first, and later loads are cache hits.

Nothing here imports torch, transformers or onnxruntime at import time: the version-skew session
(``tests/skew``) runs in an environment that has only the old runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import phi3
import pytest

pytest_plugins = ["phi3.testing.fixtures"]

# The version-skew tests need artifacts built beforehand and the old runtime: only the dml_skew nox
# session (which sets PHI3_DML_SKEW_ARTIFACTS) collects them.
collect_ignore = [] if os.environ.get("PHI3_DML_SKEW_ARTIFACTS") else ["skew"]

PROMPT = "The quick brown fox"
CHAT = [{"role": "user", "content": "Hello, who are you?"}]

LoadDml = Callable[..., phi3.Model]


@pytest.fixture
def load_dml(tiny_phi3: Path) -> Iterator[LoadDml]:
    """``load_dml(precision, **options)``: the tiny model on the CPU provider; closed after the test."""
    opened: list[phi3.Model] = []

    def load(precision: str = "int4", device: str = "cpu", **options: Any) -> phi3.Model:
        model = phi3.load(tiny_phi3, backend="dml", device=device, precision=precision, **options)
        opened.append(model)
        return model

    yield load
    for model in opened:
        model.close()
