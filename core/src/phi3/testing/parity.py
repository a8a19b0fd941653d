"""Opt-in family parity suite: greedy ids equal to the fp32 reference on every Phi-3 layout.

:class:`phi3.testing.suite.BackendConformanceSuite` checks the contract on one config shape. This
suite checks *right answers* on every catalogue layout (:data:`phi3.testing.variants.VARIANTS`:
sliding window, LongRoPE, GQA with head_dim 128, partial rotary, tied embeddings, byte-level
tokenizer), on checkpoints whose weights make position mistakes visible. A backend test module
opts in by subclassing it::

    # tests/test_family_parity.py   (conftest: pytest_plugins = ["phi3.testing.fixtures"])
    import phi3
    from phi3.testing.parity import FamilyParitySuite

    class TestMyBackendFamily(FamilyParitySuite):
        backend = "mybackend"
        device = "CPU"
        precision = "fp32"                # your highest-fidelity precision
        refusals = {("phi4-mini", "fp16"): phi3.PrecisionNotSupportedError}
        known_divergences = {("phi3-mini-128k", "longrope_decode"): "vendor 1.2 keeps short-factor KV"}
        kl_bounds = {"int8": 0.05, "int4": 0.5}    # needs teacher_forced_logprobs()

For every variant and every case that applies to it (:data:`CASES`), the backend's greedy ids
must equal :func:`phi3.testing.reference.reference_greedy_ids` over ``new_tokens`` (32) tokens:

- ``short``: a short prompt (every variant);
- ``longrope_prompt``: a prompt already longer than ``original_max_position_embeddings`` (the whole
  prefill uses the long factors: robust, any correct backend passes it);
- ``longrope_decode``: a prompt 8 tokens short of the switch, so generation crosses it. The
  reference recomputes the sequence with the long factors at the switch (what transformers'
  full forward computes); a backend whose KV cache keeps the short-factor keys diverges after the
  switch. That is what upstream runtimes do today, so this case is the fragile one: declare it in
  ``known_divergences`` (a strict xfail, which turns red when the backend starts matching);
- ``past_window``: a prompt 24 tokens longer than the sliding window (4k layouts).

``refusals`` maps ``(variant, precision)`` to the :class:`phi3.Phi3Error` subclass the backend
raises for that layout (at load or first generate); the suite then asserts the refusal instead.
``case_refusals`` maps ``(variant, case)`` to the error ``generate`` raises for that case's prompt
(a backend whose context stops at the sliding window refuses ``past_window`` prompts).
Teacher-forced KL bounds need a way to get a backend's logits, which the phi3 API does not
expose: override :meth:`FamilyParitySuite.teacher_forced_logprobs` and list the precisions in
``kl_bounds``. Nothing here is part of ``BackendConformanceSuite``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

import phi3
from phi3.errors import Phi3Error
from phi3.testing.variants import VARIANTS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["CASES", "FamilyParitySuite", "case_applies", "parity_prompt"]

CASES: tuple[str, ...] = ("short", "longrope_prompt", "longrope_decode", "past_window")
SHORT_PROMPT = "The quick brown fox"
_MARGIN = 8  # tokens past (or short of) the LongRoPE switch
_WINDOW_MARGIN = 24  # tokens past the sliding window: enough history outside it to matter


def case_applies(variant_name: str, case: str) -> bool:
    """Whether ``case`` tests something on this variant's layout."""
    tiny = VARIANTS[variant_name]
    if case == "short":
        return True
    if case in ("longrope_prompt", "longrope_decode"):
        return tiny.longrope
    if case == "past_window":
        return tiny.sliding_window is not None and tiny.sliding_window < tiny.max_position_embeddings
    raise ValueError(f"unknown parity case {case!r}; known: {CASES}")


def parity_prompt(model_dir: str | Path, variant_name: str, case: str) -> str:
    """The deterministic prompt text of ``case``, sized in tokens with the model's own tokenizer."""
    from phi3.testing.reference import encode_prompt
    from phi3.testing.tiny_model import _CORPUS_EN

    if not case_applies(variant_name, case):
        raise ValueError(f"case {case!r} does not apply to variant {variant_name!r}")
    tiny = VARIANTS[variant_name]
    if case == "short":
        return SHORT_PROMPT
    if case == "longrope_prompt":
        target = tiny.original_max_position_embeddings + _MARGIN
    elif case == "longrope_decode":
        target = tiny.original_max_position_embeddings - _MARGIN
    else:
        assert tiny.sliding_window is not None
        target = tiny.sliding_window + _WINDOW_MARGIN
    words = " ".join(_CORPUS_EN).split()
    for count in range(1, len(words) + 1):
        text = " ".join(words[:count])
        if len(encode_prompt(model_dir, text)) >= target:
            return text
    raise RuntimeError(f"the corpus is too short for a {target}-token prompt")


class FamilyParitySuite:
    """Greedy parity with the fp32 reference on every family layout; configure with the attributes."""

    backend: ClassVar[str]
    engine: ClassVar[str | None] = None
    device: ClassVar[str] = "auto"
    precision: ClassVar[str]
    """The backend's highest-fidelity precision: greedy ids must be exact there."""
    backend_options: ClassVar[dict[str, Any]] = {}
    variants: ClassVar[tuple[str, ...]] = tuple(VARIANTS)
    weights_dtype: ClassVar[str] = "float32"
    """dtype of the tiny checkpoints' weights ("bfloat16" tests conversion from bf16 sources)."""
    new_tokens: ClassVar[int] = 32
    refusals: ClassVar[Mapping[tuple[str, str], type[Phi3Error]]] = {}
    """(variant, precision) -> the phi3 error the backend raises instead of running that layout."""
    case_refusals: ClassVar[Mapping[tuple[str, str], type[Phi3Error]]] = {}
    """(variant, case) -> the phi3 error ``generate`` raises for that case's prompt, instead of an answer."""
    known_divergences: ClassVar[Mapping[tuple[str, str], str]] = {}
    """(variant, case) -> why it differs today (upstream bug + version); run as strict xfail."""
    kl_bounds: ClassVar[Mapping[str, float]] = {}
    """precision -> largest mean KL(reference || backend) in nats per token, teacher-forced."""

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Log-probabilities ``[len(input_ids), vocab]`` from ONE forward of ``input_ids`` on ``model``.

        Row ``i`` scores the token after ``input_ids[: i + 1]``. Override it to get KL bounds; the
        reference is :func:`phi3.testing.reference.reference_logprobs`.
        """
        raise NotImplementedError

    # -- parametrisation ----------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if metafunc.definition.name == "test_greedy_ids_equal_the_fp32_reference":
            params = []
            for name in self.variants:
                for case in CASES:
                    if not case_applies(name, case):
                        continue
                    reason = self.known_divergences.get((name, case))
                    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
                    params.append(pytest.param(name, case, marks=marks, id=f"{name}-{case}"))
            metafunc.parametrize(("variant", "case"), params)
        elif metafunc.definition.name == "test_teacher_forced_kl_is_bounded":
            rows = [pytest.param(v, p, id=f"{v}-{p}") for v in self.variants for p in self.kl_bounds]
            if not rows:
                skip = pytest.mark.skip(reason="no kl_bounds declared: no quantized precision is KL-checked")
                rows = [pytest.param(None, None, marks=[skip], id="no-kl-bounds")]
            metafunc.parametrize(("variant", "precision"), rows)

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def family_models(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Models]:
        models = _Models(cls, tmp_path_factory.mktemp("family"))
        yield models
        models.close()

    # -- tests --------------------------------------------------------------------------------

    def test_declarations_name_real_layouts_and_phi3_errors(self) -> None:
        for (name, precision), error in self.refusals.items():
            assert name in VARIANTS, f"refusals names unknown variant {name!r}"
            assert isinstance(precision, str) and precision
            assert isinstance(error, type) and issubclass(error, Phi3Error), f"{error!r} is not a phi3 error"
        for (name, case), error in self.case_refusals.items():
            assert name in VARIANTS and case_applies(name, case), f"case_refusals: bad row {(name, case)}"
            assert isinstance(error, type) and issubclass(error, Phi3Error), f"{error!r} is not a phi3 error"
            assert (name, case) not in self.known_divergences, f"{(name, case)} is both refused and divergent"
        for (name, case), reason in self.known_divergences.items():
            assert name in VARIANTS and case_applies(name, case), f"known_divergences: bad row {(name, case)}"
            assert isinstance(reason, str) and len(reason.strip()) >= 10, "say which upstream bug and version"
        for precision, bound in self.kl_bounds.items():
            assert isinstance(precision, str) and bound > 0 and math.isfinite(bound)
        if self.kl_bounds:
            assert type(self).teacher_forced_logprobs is not FamilyParitySuite.teacher_forced_logprobs, (
                "kl_bounds needs teacher_forced_logprobs(): the phi3 API does not expose a backend's logits"
            )

    def test_greedy_ids_equal_the_fp32_reference(self, family_models: _Models, variant: str, case: str) -> None:
        from phi3.testing.reference import encode_prompt, reference_greedy_ids

        path = family_models.checkpoint(variant)
        refusal = self.refusals.get((variant, self.precision))
        if refusal is not None:
            family_models.assert_refused(variant, self.precision, refusal)
            return
        prompt = parity_prompt(path, variant, case)
        case_refusal = self.case_refusals.get((variant, case))
        if case_refusal is not None:
            with pytest.raises(case_refusal):
                family_models.model(variant, self.precision).generate(prompt, max_new_tokens=2, ignore_eos=True)
            return
        prompt_ids = encode_prompt(path, prompt)
        expected = reference_greedy_ids(path, input_ids=prompt_ids, max_new_tokens=self.new_tokens)
        result = family_models.model(variant, self.precision).generate(
            prompt, max_new_tokens=self.new_tokens, ignore_eos=True
        )
        assert result.prompt_tokens == len(prompt_ids), "the backend tokenized the prompt differently"
        got = list(result.token_ids)
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
        assert got == expected, (
            f"{variant} / {case} ({len(prompt_ids)}-token prompt) at {self.precision}: greedy ids diverge from "
            f"the fp32 reference at new token {first}: got {got}, expected {expected}"
        )

    def test_teacher_forced_kl_is_bounded(self, family_models: _Models, variant: str, precision: str) -> None:
        import numpy as np

        from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_logprobs

        path = family_models.checkpoint(variant)
        refusal = self.refusals.get((variant, precision))
        if refusal is not None:
            family_models.assert_refused(variant, precision, refusal)
            return
        case = "longrope_prompt" if case_applies(variant, "longrope_prompt") else "short"
        prompt_ids = encode_prompt(path, parity_prompt(path, variant, case))
        ids = prompt_ids + reference_greedy_ids(path, input_ids=prompt_ids, max_new_tokens=self.new_tokens)
        expected = reference_logprobs(path, ids)
        got = np.asarray(self.teacher_forced_logprobs(family_models.model(variant, precision), ids), np.float64)
        assert got.shape == expected.shape, f"teacher_forced_logprobs returned {got.shape}, want {expected.shape}"
        scored = slice(len(prompt_ids) - 1, len(ids) - 1)  # the rows that predict the continuation
        p = np.exp(expected[scored].astype(np.float64))
        kl = float(np.mean(np.sum(p * (expected[scored] - got[scored]), axis=-1)))
        print(f"{variant} {precision}: mean KL {kl:.5f} nats/token")  # shown with -s / on failure
        assert kl <= self.kl_bounds[precision], (
            f"{variant} at {precision}: mean KL {kl:.4f} nats/token > bound {self.kl_bounds[precision]}"
        )


class _Models:
    """Tiny variant checkpoints and loaded models, built once per test class."""

    def __init__(self, suite: type[FamilyParitySuite], root: Path) -> None:
        self._suite, self._root = suite, root
        self._paths: dict[str, Path] = {}
        self._loaded: dict[tuple[str, str], phi3.Model] = {}

    def checkpoint(self, variant: str) -> Path:
        from phi3.testing.tiny_model import make_tiny_phi3

        if variant not in self._paths:
            self._paths[variant] = make_tiny_phi3(
                self._root / variant, variant=variant, dtype=self._suite.weights_dtype
            )
        return self._paths[variant]

    def _load(self, variant: str, precision: str) -> phi3.Model:
        suite = self._suite
        return phi3.load(
            self.checkpoint(variant),
            backend=suite.backend,
            device=suite.device,
            precision=precision,
            engine=suite.engine,
            **suite.backend_options,
        )

    def model(self, variant: str, precision: str) -> phi3.Model:
        if (variant, precision) not in self._loaded:
            self._loaded[(variant, precision)] = self._load(variant, precision)
        return self._loaded[(variant, precision)]

    def assert_refused(self, variant: str, precision: str, error: type[Phi3Error]) -> None:
        """Loading and generating must raise ``error`` (a refusal, not a crash or a wrong answer)."""
        with pytest.raises(error), self._load(variant, precision) as model:
            model.generate(SHORT_PROMPT, max_new_tokens=2, ignore_eos=True)

    def close(self) -> None:
        for model in self._loaded.values():
            model.close()
        self._loaded.clear()
