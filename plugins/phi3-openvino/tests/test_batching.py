"""Continuous batching (-O max_concurrent_generations=N): N real concurrent streams on one model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _ov_common import F32

import phi3

PROMPTS = ("Hello", "The capital of France", "a b c d", "xyz")


def test_interleaved_streams_equal_one_at_a_time(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", **F32) as single:
        assert single.max_concurrent_generations == 1
        expected = [single.generate(p, max_new_tokens=24, ignore_eos=True) for p in PROMPTS]
    with phi3.load(
        tiny_phi3, backend="openvino", device="CPU", precision="int8", max_concurrent_generations=4, **F32
    ) as model:
        assert model.max_concurrent_generations == 4
        assert model.session.details["max_concurrent_generations"] == 4
        streams = [model.stream(p, max_new_tokens=24, ignore_eos=True) for p in PROMPTS]
        texts = [next(s) for s in streams]  # all four are in the batch now
        texts = [first + "".join(s) for first, s in zip(texts, streams, strict=True)]
        assert texts == [r.text for r in expected]
        assert [s.result.token_ids for s in streams] == [r.token_ids for r in expected]
        assert [s.result.prompt_tokens for s in streams] == [r.prompt_tokens for r in expected]


def test_threads_share_the_batch_and_limits_hold(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    with phi3.load(
        tiny_phi3, backend="openvino", device="CPU", precision="int8", max_concurrent_generations=2, **F32
    ) as model:
        results: dict[int, phi3.GenerationResult] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, model.generate(PROMPTS[i], max_new_tokens=16)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(results) == [0, 1] and all(r.new_tokens <= 16 for r in results.values())
        a, b, c = (model.stream("Hi", max_new_tokens=64, ignore_eos=True) for _ in range(3))
        next(a)
        next(b)
        with pytest.raises(phi3.ModelBusyError):
            next(c)
        a.close()  # cancels its request in the batch and frees the slot
        assert a.new_tokens < 64
        d = model.stream("Hi", max_new_tokens=64, ignore_eos=True)
        assert "".join(d) == d.result.text and d.result.new_tokens == 64
        b.close()


def test_max_concurrent_generations_is_checked(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    with pytest.raises(phi3.ConfigError, match="max_concurrent_generations=0 is not allowed"):
        phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", max_concurrent_generations=0)
    with pytest.raises(phi3.ConfigError, match="needs the genai engine"):
        phi3.load(
            tiny_phi3,
            backend="openvino",
            device="CPU",
            precision="int8",
            engine="optimum",
            max_concurrent_generations=2,
        )
