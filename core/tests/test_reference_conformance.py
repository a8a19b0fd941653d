"""The conformance suite, run on the reference backend: proves the suite itself works."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

import phi3
from phi3.testing import override
from phi3.testing.parity import FamilyParitySuite
from phi3.testing.suite import BackendConformanceSuite

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


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


class TestReferenceFamilyParity(FamilyParitySuite):
    """The opt-in family parity suite on the reference backend: exact at fp32, bounded KL at bf16."""

    backend = "reference"
    device = "cpu"
    precision = "fp32"
    kl_bounds: ClassVar[dict[str, float]] = {"bf16": 0.005}  # measured 0.0002-0.0005 nats/token

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        import numpy as np
        import torch

        native, _ = model.session.native
        with torch.no_grad():
            logits = native(torch.tensor([list(input_ids)]), use_cache=False).logits[0].to(torch.float32)
        return np.asarray(torch.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)


class TestReferenceFamilyRefusal(FamilyParitySuite):
    """The suite's refusal path: the reference backend has no int4, and phi3 refuses it clearly."""

    backend = "reference"
    device = "cpu"
    precision = "int4"
    variants = ("phi3-mini-4k",)
    refusals: ClassVar[dict[tuple[str, str], type[phi3.Phi3Error]]] = {
        ("phi3-mini-4k", "int4"): phi3.PrecisionNotSupportedError
    }


class TestReferenceBackendOnASentencePieceCheckpoint(BackendConformanceSuite):
    """``tokenizer_model = True``: the whole suite on the twin checkpoint that has ``tokenizer.model``."""

    backend = "reference"
    device = "cpu"
    precisions = ("fp32",)
    new_tokens = 8
    tokenizer_model = True

    def test_the_checkpoint_has_a_sentencepiece_model(self, tiny_phi3: Any) -> None:
        assert (tiny_phi3 / "tokenizer.model").is_file()


def test_a_suite_names_its_own_vendor_modules_and_the_check_can_fail() -> None:
    """A backend whose probe imports its runtime is caught once the suite names that runtime."""

    class ProbeImportsItsRuntime(BackendConformanceSuite):
        backend = "reference"
        vendor_modules = ("pluggy",)  # phi3.backends() really imports it: stands in for a runtime

    with pytest.raises(AssertionError, match="listing backends imported vendor modules"):
        ProbeImportsItsRuntime().test_probe_imports_no_vendor_library()
