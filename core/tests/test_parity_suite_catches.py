"""The family parity suite fails where it must: run it in a child pytest on rigged subclasses.

A suite that always passes proves nothing. Three rigged cases, each run for real on the reference
backend: the backend with its LongRoPE workaround removed (transformers' generate() then loses the
context at the switch), a ``known_divergences`` row on a backend that matches (strict xfail: red),
and a refusal declared with the wrong error class.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

MODULE = textwrap.dedent(
    """
    import phi3
    from phi3.testing import reference_backend
    from phi3.testing.parity import FamilyParitySuite

    pytest_plugins = ["phi3.testing.fixtures"]


    class TestWithoutWorkaround(FamilyParitySuite):
        backend = "reference"
        device = "cpu"
        precision = "fp32"
        variants = ("phi3-mini-128k", "phi4-mini")

        def setup_method(self):
            self._saved = reference_backend._crosses_longrope_switch
            reference_backend._crosses_longrope_switch = lambda *args: False

        def teardown_method(self):
            reference_backend._crosses_longrope_switch = self._saved


    class TestDivergenceThatIsNot(FamilyParitySuite):
        backend = "reference"
        device = "cpu"
        precision = "fp32"
        variants = ("phi3.5-mini",)
        known_divergences = {("phi3.5-mini", "longrope_prompt"): "pretend the vendor mixes LongRoPE tables here"}


    class TestWrongRefusalClass(FamilyParitySuite):
        backend = "reference"
        device = "cpu"
        precision = "int4"
        variants = ("phi3-mini-4k",)
        refusals = {("phi3-mini-4k", "int4"): phi3.ConfigError}  # phi3 raises PrecisionNotSupportedError
    """
)


def test_rigged_subclasses_fail_exactly_where_they_should(tmp_path: Path) -> None:
    (tmp_path / "test_rigged.py").write_text(MODULE, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "test_rigged.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    outcome = {m[1]: m[0] for m in re.findall(r"^(PASSED|FAILED|XFAIL|XPASS|SKIPPED|ERROR) (\S+)", done.stdout, re.M)}
    failed = sorted(name.split("::", 1)[1] for name, how in outcome.items() if how == "FAILED")
    assert failed == [
        "TestDivergenceThatIsNot::test_greedy_ids_equal_the_fp32_reference[phi3.5-mini-longrope_prompt]",
        "TestWithoutWorkaround::test_greedy_ids_equal_the_fp32_reference[phi3-mini-128k-longrope_decode]",
        "TestWithoutWorkaround::test_greedy_ids_equal_the_fp32_reference[phi4-mini-longrope_decode]",
        "TestWrongRefusalClass::test_greedy_ids_equal_the_fp32_reference[phi3-mini-4k-past_window]",
        "TestWrongRefusalClass::test_greedy_ids_equal_the_fp32_reference[phi3-mini-4k-short]",
    ], done.stdout[-4000:]
    # only from the switch on: new token k comes from a forward over prompt + k tokens, which uses the
    # long factors once that exceeds original_max_position_embeddings (64 in the tiny LongRoPE layouts)
    found = re.findall(r"\((\d+)-token prompt\) at fp32: greedy ids diverge .* at new token (\d+)", done.stdout)
    assert len(found) >= 2 and all(int(k) >= 65 - int(n) for n, k in found), found
    assert "[XPASS(strict)] pretend the vendor mixes LongRoPE tables here" in done.stdout
    assert "PrecisionNotSupportedError" in done.stdout
    passed = [name for name, how in outcome.items() if how == "PASSED"]
    assert len(passed) >= 8, done.stdout[-4000:]  # the other rows of the same classes pass
