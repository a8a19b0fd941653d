"""The Python API refuses a second concurrent generation on one Model instead of corrupting it."""

from __future__ import annotations

import pytest

import phi3
from phi3.errors import ModelBusyError


def test_second_concurrent_stream_is_refused_then_works(tiny_phi3: object) -> None:
    model = phi3.load("smoke", backend="reference", precision="fp32")
    assert model.max_concurrent_generations == 1
    first = model.stream("Hello", max_new_tokens=20, ignore_eos=True)
    second = model.stream("World", max_new_tokens=5)
    next(first)
    with pytest.raises(ModelBusyError, match="already running 1 generation"):
        next(second)
    first.close()
    third = model.stream("World", max_new_tokens=5)
    assert "".join(third) == third.result.text
    assert third.new_tokens == third.result.new_tokens
    model.close()


def test_openvino_second_stream_is_a_phi3_error_not_an_abort() -> None:
    pytest.importorskip("openvino_genai")
    model = phi3.load("smoke", backend="openvino")
    first = model.stream("Hello", max_new_tokens=50, ignore_eos=True)
    second = model.stream("World", max_new_tokens=5)
    piece = next(first)
    with pytest.raises(ModelBusyError):
        next(second)
    rest = list(first)  # the refused stream left the first one decoding, to the end, nothing lost
    assert first.result.new_tokens == 50
    assert piece + "".join(rest) == first.result.text
    assert model.generate("World", max_new_tokens=3).new_tokens == 3
    model.close()
