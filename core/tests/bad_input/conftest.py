"""Fixtures of the bad-input suites (helpers live in ``_sandbox``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _sandbox import Sandbox, make_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return make_sandbox(tmp_path)
