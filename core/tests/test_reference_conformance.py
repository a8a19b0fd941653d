"""The conformance suite, run on the reference backend: proves the suite itself works."""

from __future__ import annotations

from typing import Any

import pytest

from phi3.testing import override
from phi3.testing.suite import BackendConformanceSuite


class TestReferenceBackend(BackendConformanceSuite):
    backend = "reference"
    device = "cpu"
    new_tokens = 8


def test_overriding_a_standard_test_needs_a_reason() -> None:
    with pytest.raises(TypeError, match="override"):

        class Sneaky(BackendConformanceSuite):
            backend = "reference"

            def test_greedy_is_deterministic(self, loaded_model: Any) -> None:
                pass

    class Explained(BackendConformanceSuite):
        backend = "reference"

        @override(reason="this backend's greedy decoding is checked against hardware traces elsewhere")
        def test_greedy_is_deterministic(self, loaded_model: Any) -> None:
            pass

    assert Explained.test_greedy_is_deterministic is not BackendConformanceSuite.test_greedy_is_deterministic
    with pytest.raises(ValueError):
        override(reason="")
