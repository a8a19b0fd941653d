"""Marking a deliberate override of a conformance test.

A backend that cannot pass a standard test must say why, in code, where reviewers see it::

    class TestMine(BackendConformanceSuite):
        @override(reason="the NPU compiler needs static shapes; stop strings are checked in test_npu.py")
        def test_stop_strings(self, loaded_model): ...

:class:`phi3.testing.suite.BackendConformanceSuite` refuses (at class creation) a subclass that
redefines a standard test without this decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

OVERRIDE_ATTRIBUTE = "__phi3_override_reason__"


def override(*, reason: str) -> Callable[[F], F]:
    """Allow a subclass to replace a standard conformance test, recording ``reason``."""
    if not isinstance(reason, str) or len(reason.strip()) < 10:
        raise ValueError("override(reason=...) needs a real explanation (at least a sentence)")

    def mark(func: F) -> F:
        setattr(func, OVERRIDE_ATTRIBUTE, reason.strip())
        return func

    return mark


__all__ = ["OVERRIDE_ATTRIBUTE", "override"]
