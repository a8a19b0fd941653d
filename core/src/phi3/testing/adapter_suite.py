"""The conformance suite's LoRA adapter tests (part of :class:`phi3.testing.suite.BackendConformanceSuite`).

They run for every backend that declares ``adapters`` (``BackendInfo.adapters`` / its engine's):

- on each high-fidelity precision it offers (:attr:`AdapterConformanceTests.adapter_exact_precisions`),
  greedy ids with an adapter active equal transformers + peft's, fp32, adapter merged
  (:func:`phi3.testing.adapters.reference_adapter_ids`);
- adapters A, base, B, A, base in turn on one loaded model each answer as if alone: one adapter's
  effect never leaks into the next request (on a backend with only quantized precisions, each
  answer equals that of the same request made first);
- a weighted mix of the two (``adapters={"a": ..., "b": ..., "ab": {"a": 0.5, "b": 1.0}}``) answers
  exactly as transformers + peft with ``W + 0.5 B_a A_a + 1.0 B_b A_b`` merged
  (:func:`phi3.testing.adapters.reference_mix_ids`), and differently from a, b and the base, so a
  backend that drops or mis-weights one component fails;
- a request naming an adapter the model has not loaded is an ``AdapterError`` listing the loaded
  ones, and the model keeps working.

A backend that does not declare adapters must refuse them with an ``AdapterError`` before any work.
The adapters are random but discriminating (:func:`phi3.testing.adapters.make_lora_adapter`): an
adapter applied wrongly, or not at all, changes the greedy ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

import phi3
from phi3.errors import AdapterError
from phi3.plugins import get_registry

ADAPTER_PROMPT = "The quick brown fox"
MIX_WEIGHTS = {"a": 0.5, "b": 1.0}
"""The conformance mix of the two test adapters: on the tiny checkpoint its greedy path differs from a's,
b's and the base's at every backend's 12 tokens, with a top-1 margin (0.029 logit std) above
:data:`phi3.testing.adapters.MIN_MARGIN`, so fp16 rounding does not flip it."""


class AdapterConformanceTests:
    """Mixed into the conformance suite; the settings below have working defaults."""

    backend: ClassVar[str]
    engine: ClassVar[str | None]
    new_tokens: ClassVar[int]
    adapter_exact_precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")
    """Precisions whose greedy ids must equal the fp32 merged reference exactly (those the backend offers)."""

    @classmethod
    def load(cls, model: Path, precision: str | None = None, **options: Any) -> phi3.Model:
        raise NotImplementedError  # the suite's

    @classmethod
    def _precisions(cls) -> tuple[str, ...]:
        raise NotImplementedError  # the suite's

    @classmethod
    def _declares_adapters(cls) -> bool:
        info = get_registry().entry(cls.backend).info
        if info is None:
            return False
        engine = info.engine(cls.engine) if cls.engine else info.engine(info.default_engine or "")
        return bool(engine.adapters if engine is not None and engine.adapters is not None else info.adapters)

    @classmethod
    def _exact(cls) -> tuple[str, ...]:
        return tuple(p for p in cls._precisions() if p in cls.adapter_exact_precisions)

    def _needs_adapters(self) -> None:
        if not self._declares_adapters():
            pytest.skip(f"{self.backend} does not declare LoRA adapters (its refusal is tested instead)")

    @pytest.fixture(scope="class")
    @classmethod
    def lora_adapters(cls, tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
        """Two discriminating adapters of the suite's tiny checkpoint, made with peft."""
        if not cls._declares_adapters():
            return {}
        from phi3.testing.adapters import make_lora_adapter

        folder = tmp_path_factory.mktemp("lora")
        return {
            "a": make_lora_adapter(tiny_phi3, folder / "a", seed=0),
            "b": make_lora_adapter(tiny_phi3, folder / "b", seed=1, rank=4, targets=("qkv_proj", "down_proj")),
        }

    def _generate(self, model: phi3.Model, adapter: str | None) -> list[int]:
        result = model.generate(ADAPTER_PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True, adapter=adapter)
        assert result.adapter == adapter
        return list(result.token_ids)

    def _references(self, tiny: Path, adapters: dict[str, Path]) -> dict[str | None, list[int]]:
        from phi3.testing.adapters import reference_adapter_ids
        from phi3.testing.reference import encode_prompt, reference_greedy_ids

        ids = encode_prompt(tiny, ADAPTER_PROMPT)
        wanted: dict[str | None, list[int]] = {
            name: reference_adapter_ids(tiny, path, ids, self.new_tokens) for name, path in adapters.items()
        }
        wanted[None] = reference_greedy_ids(tiny, input_ids=ids, max_new_tokens=self.new_tokens)
        assert len({tuple(v) for v in wanted.values()}) == len(wanted), "the test adapters do not discriminate"
        return wanted

    def test_adapter_greedy_ids_match_the_merged_reference(
        self, tiny_phi3: Path, lora_adapters: dict[str, Path], adapter_precision: str
    ) -> None:
        self._needs_adapters()
        wanted = self._references(tiny_phi3, lora_adapters)
        with self.load(tiny_phi3, adapter_precision, adapters={"a": lora_adapters["a"]}) as model:
            assert model.adapters == ("a",)
            assert self._generate(model, "a") == wanted["a"]

    def test_adapters_alternate_without_leaking(self, tiny_phi3: Path, lora_adapters: dict[str, Path]) -> None:
        self._needs_adapters()
        exact = self._exact()
        precision = exact[0] if exact else self._precisions()[0]
        order: list[str | None] = ["a", None, "b", "a", None, "b"]
        with self.load(tiny_phi3, precision, adapters=lora_adapters) as model:
            assert model.adapters == ("a", "b")
            got = [self._generate(model, name) for name in order]
        if exact:
            wanted = self._references(tiny_phi3, lora_adapters)
            assert got == [wanted[name] for name in order]
            return
        first = {name: got[order.index(name)] for name in order}  # quantized: each answer as when asked first
        assert got == [first[name] for name in order]
        assert len({tuple(ids) for ids in first.values()}) == 3, "adapters a, b and the base answered alike"

    def test_weighted_mix_matches_the_merged_mix_reference(
        self, tiny_phi3: Path, lora_adapters: dict[str, Path], adapter_precision: str
    ) -> None:
        self._needs_adapters()
        from phi3.testing.adapters import reference_mix_ids
        from phi3.testing.reference import encode_prompt

        wanted = self._references(tiny_phi3, lora_adapters)
        parts = [(lora_adapters[name], weight) for name, weight in MIX_WEIGHTS.items()]
        mix = reference_mix_ids(tiny_phi3, parts, encode_prompt(tiny_phi3, ADAPTER_PROMPT), self.new_tokens)
        assert mix not in wanted.values(), "the test mix answers like a, b or the base: it would not discriminate"
        adapters: dict[str, Any] = {**lora_adapters, "ab": MIX_WEIGHTS}
        with self.load(tiny_phi3, adapter_precision, adapters=adapters) as model:
            assert model.adapters == ("a", "b", "ab")
            got = [self._generate(model, name) for name in ("ab", "a", "b", "ab")]
        assert got == [mix, wanted["a"], wanted["b"], mix]

    def test_unknown_adapter_is_refused_and_the_model_keeps_working(
        self, tiny_phi3: Path, lora_adapters: dict[str, Path]
    ) -> None:
        self._needs_adapters()
        with self.load(tiny_phi3, adapters={"a": lora_adapters["a"]}) as model:
            before = self._generate(model, "a")
            with pytest.raises(AdapterError, match=r"no adapter named 'nope'.*\ba\b"):
                model.generate(ADAPTER_PROMPT, max_new_tokens=2, adapter="nope")
            assert self._generate(model, "a") == before

    def test_undeclared_adapters_are_refused(self, tiny_phi3: Path, tmp_path: Path) -> None:
        if self._declares_adapters():
            pytest.skip(f"{self.backend} declares LoRA adapters (they are tested instead)")
        folder = tmp_path / "not-read"  # refused before the folder is even looked at
        with pytest.raises(AdapterError, match="cannot apply LoRA adapters"):
            self.load(tiny_phi3, adapters={"a": folder})


__all__ = ["ADAPTER_PROMPT", "MIX_WEIGHTS", "AdapterConformanceTests"]
