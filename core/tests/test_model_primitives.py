"""The public primitives chat with tools is built on (:mod:`phi3.decoding`), on the reference backend.

``Model.stream_passes`` runs several decodes in one generation slot (:class:`phi3.decoding.GenerationSlot`):
no other stream gets the model in between, the stream's ``new_tokens`` counts every pass, its result is
what the passes return, and ``Model.close()`` ends it like any stream. :mod:`phi3.tools` uses only these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path

import pytest

import phi3
from phi3.decoding import GenerationSlot, ModelCore, Passes
from phi3.types import GenerationResult

PROMPT = "The quick brown fox"
GREEDY = phi3.GenerationConfig(max_new_tokens=3, ignore_eos=True)


def _two_passes(seen: dict[str, object]) -> Passes:
    def passes(slot: GenerationSlot) -> Generator[str, None, GenerationResult]:
        first = slot.stream(PROMPT, GREEDY)
        yield from first
        seen["busy_between"] = _refused(slot.model)  # another stream while this one holds the slot
        second = slot.stream(PROMPT + first.result.text, GREEDY)
        for _ in second:
            pass
        seen["slot_tokens"] = slot.new_tokens
        return dataclasses.replace(
            first.result, text="done", token_ids=first.result.token_ids + second.result.token_ids
        )

    return passes


def _refused(model: ModelCore) -> bool:
    try:
        model.generate(PROMPT, max_new_tokens=1)
    except phi3.ModelBusyError:
        return True
    return False


def test_passes_share_one_slot_and_count_every_token(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        assert model.max_concurrent_generations == 1
        seen: dict[str, object] = {}
        stream = model.stream_passes(_two_passes(seen))
        assert stream.new_tokens == 0
        pieces = list(stream)
        assert "".join(pieces) == model.generate(PROMPT, GREEDY).text  # the first pass streams, greedy
        assert seen == {"busy_between": True, "slot_tokens": 6}
        assert stream.new_tokens == 6
        assert stream.result.text == "done" and len(stream.result.token_ids) == 6
        assert model.generate(PROMPT, max_new_tokens=1).new_tokens == 1  # the slot was given back


def test_a_passes_stream_is_ended_by_close(tiny_phi3: Path) -> None:
    model = phi3.load(tiny_phi3, backend="reference", precision="fp32")
    stream = model.stream_passes(_two_passes({}))
    assert next(stream)
    model.close()
    with pytest.raises(phi3.ConfigError, match="closed while this stream was running"):
        next(stream)
    with pytest.raises(phi3.ConfigError, match="closed"):
        model.stream_passes(_two_passes({}))
