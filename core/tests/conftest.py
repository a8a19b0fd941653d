"""phi3-core's tests run against the reference backend (real transformers on the CPU).

The nox session installs ``tests/distributions/phi3-reference-backend``, which registers
``phi3.testing.reference_backend`` as backend ``reference`` through the ``phi3`` entry point,
exactly like a third-party backend; in-process tests also register it directly so that they work
without that distribution.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi3 import plugins
from phi3.testing import reference_backend

pytest_plugins = ["phi3.testing.fixtures"]

DISTRIBUTIONS = Path(__file__).parent / "distributions"


@pytest.fixture(autouse=True)
def reference_registered() -> Iterator[None]:
    """A fresh registry per test, with the reference backend in it."""
    plugins.reset_registry()
    registry = plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    yield
    plugins.reset_registry()


@pytest.fixture(scope="session")
def broken_plugins_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """phi3-broken-example pip-installed (a real wheel with entry points) into a --target folder."""
    target = tmp_path_factory.mktemp("broken-plugins")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(DISTRIBUTIONS / "phi3-broken-example"),
        ],
        check=True,
        timeout=600,
    )
    return target
