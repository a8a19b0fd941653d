"""The npu-library engine: numerics against the transformers fp32 reference, and the library's bugs contained.

Runs the real intel-npu-acceleration-library 1.4.0 (built by ci/setup.py) on the CPU override.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _npu_common import LIBRARY, PARITY_PROMPT, PROMPT

import phi3
from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_next_token_logits
from phi3_npu.library_engine import STATE_FOLDER, LibraryEngine

pytestmark = pytest.mark.usefixtures("library_installed")

N = 20
MAX_LOGIT_ERROR = 1e-2
"""The issue's bound. Measured here: fp16 ~3e-3, int8 ~8e-3 (logit spread ~0.15)."""


def _load(tiny: Path, precision: str) -> phi3.Model:
    return phi3.load(tiny, precision=precision, **LIBRARY)


@pytest.fixture(scope="module", params=["fp16", "int8"])
def parity_model(request: pytest.FixtureRequest, tiny_phi3: Path) -> Iterator[phi3.Model]:
    with _load(tiny_phi3, request.param) as model:
        yield model


def test_greedy_ids_equal_the_fp32_reference(parity_model: phi3.Model, tiny_phi3: Path) -> None:
    reference = reference_greedy_ids(tiny_phi3, PARITY_PROMPT, max_new_tokens=N, ignore_eos=True)
    result = parity_model.generate(PARITY_PROMPT, max_new_tokens=N, ignore_eos=True)
    assert list(result.token_ids) == reference
    assert result.prompt_tokens == len(encode_prompt(tiny_phi3, PARITY_PROMPT))
    assert (result.engine, result.device) == ("npu-library", "CPU")


@pytest.mark.parametrize("prompt", [PROMPT, PARITY_PROMPT])
def test_logits_are_within_1e_2_of_the_fp32_reference(parity_model: phi3.Model, tiny_phi3: Path, prompt: str) -> None:
    """Every next-token logit along a 20-token continuation, library vs transformers fp32."""
    ids = encode_prompt(tiny_phi3, prompt) + reference_greedy_ids(tiny_phi3, prompt, max_new_tokens=N)
    engine: LibraryEngine = parity_model.session.native
    errors = []
    for k in range(len(ids) - N, len(ids) + 1):
        actual = np.asarray(engine.next_token_logits(ids[:k]), dtype=np.float32)
        expected = reference_next_token_logits(tiny_phi3, ids[:k])
        assert actual.shape == expected.shape
        errors.append(float(np.abs(actual - expected).max()))
    assert max(errors) < MAX_LOGIT_ERROR, f"{parity_model.precision}: max |logit error| {max(errors):.5f}"
    assert max(errors) > 0, "identical to fp32: the library did not quantize at all"


def test_int4_generates_and_really_is_quantized(tiny_phi3: Path) -> None:
    """int4 decodes the requested tokens; its logits move away from fp32 (it is not silently fp16)."""
    ids = encode_prompt(tiny_phi3, PARITY_PROMPT)
    with _load(tiny_phi3, "int4") as model:
        result = model.generate(PARITY_PROMPT, max_new_tokens=N, ignore_eos=True)
        logits = np.asarray(model.session.native.next_token_logits(ids), dtype=np.float32)
    assert result.new_tokens == N and result.finish_reason == "length"
    assert model.session.details["dtype"] == "int4"
    assert float(np.abs(logits - reference_next_token_logits(tiny_phi3, ids)).max()) > MAX_LOGIT_ERROR


def test_int4_then_int8_then_int4_in_one_process(tiny_phi3: Path) -> None:
    """The library aborts a process that runs an int8 model after an int4 one; phi3 users never see it."""
    first = _load(tiny_phi3, "int4")
    try:
        before = first.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids
        with _load(tiny_phi3, "int8") as int8:
            assert int8.generate(PROMPT, max_new_tokens=8, ignore_eos=True).new_tokens == 8
            again = first.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids  # switch back
            assert int8.generate(PROMPT, max_new_tokens=8, ignore_eos=True).new_tokens == 8
        with _load(tiny_phi3, "int4") as fresh:
            reloaded = fresh.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids
    finally:
        first.close()
    assert before == again == reloaded


def test_two_loads_in_a_row(tiny_phi3: Path) -> None:
    """The library's own second from_pretrained unpickles its export and fails; phi3's loads do not."""
    results = []
    for _ in range(2):
        with _load(tiny_phi3, "int8") as model:
            results.append(model.generate(PARITY_PROMPT, max_new_tokens=6, ignore_eos=True).token_ids)
    assert results[0] == results[1] and len(results[0]) == 6


def test_nothing_is_written_to_the_working_directory(
    tiny_phi3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phi3_home: Path
) -> None:
    """./cache (kernel blobs), ./nc_workspace and ./cache/models all land in phi3's cache instead."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with _load(tiny_phi3, "int8") as model:
        assert model.generate("A prompt length this test alone uses", max_new_tokens=4, ignore_eos=True).new_tokens
        run_dirs = list((phi3_home / "compiled" / "npu" / STATE_FOLDER / "run").iterdir())
        assert any((run / "nc_workspace").is_dir() for run in run_dirs), "neural-compressor's workspace moved"
        assert os.getcwd() == str(cwd), "the user's process never changes its working directory"
    assert sorted(os.listdir(cwd)) == []
    state = phi3_home / "compiled" / "npu" / STATE_FOLDER
    assert any((state / "cache").glob("*.blob")), "the kernel blobs went to phi3's cache"
    assert not any(p.name == "models" for p in state.rglob("*")), "no pickled model was exported"


def test_cli_writes_nothing_to_the_working_directory(run_phi3: object, tiny_phi3: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cli-cwd"
    cwd.mkdir()
    done = run_phi3(  # type: ignore[operator]
        "generate", str(tiny_phi3), "Hi", "-b", "npu", "-e", "npu-library", "--device", "CPU", "-p", "int8",
        "-n", "4", "--ignore-eos", cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "npu/npu-library on CPU, int8" in done.stderr
    assert sorted(os.listdir(cwd)) == []


def test_a_crashed_worker_is_a_phi3_error_not_a_crash(tiny_phi3: Path) -> None:
    """A native abort kills the worker only; the user's process gets a one-line BackendError."""
    with _load(tiny_phi3, "int8") as model:
        engine: LibraryEngine = model.session.native
        os.kill(engine.worker_pid, signal.SIGKILL)
        with pytest.raises(phi3.BackendError, match="worker exited unexpectedly") as info:
            model.generate(PROMPT, max_new_tokens=2)
        with pytest.raises(phi3.BackendError, match="worker exited unexpectedly"):
            model.generate(PROMPT, max_new_tokens=2)
    log = Path(str(info.value.hint).rsplit(" ", 1)[-1])
    assert log.name == "worker.log" and log.is_file(), "a crashed worker's log is kept for the user"


def test_closing_a_stream_early_cancels_the_generation(tiny_phi3: Path) -> None:
    with _load(tiny_phi3, "int8") as model:
        stream = model.stream(PROMPT, max_new_tokens=200, ignore_eos=True)
        next(iter(stream))
        stream.close()
        after = model.generate(PROMPT, max_new_tokens=3, ignore_eos=True)  # the worker is idle again
    assert after.new_tokens == 3


def test_the_worker_exits_with_the_model(tiny_phi3: Path) -> None:
    model = _load(tiny_phi3, "fp16")
    pid = model.session.native.worker_pid
    model.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_transformers_generate_still_diverges_at_the_longrope_switch(tmp_path: Path) -> None:
    """The upstream bug behind the worker's two-part generation (``LibraryWorker._parts``).

    transformers' generate (the version this environment pins, which the library generates with)
    loses the context where a generation crosses a LongRoPE model's switch. When this fails,
    transformers fixed it: the worker's split can go (check the version first).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from phi3.testing.parity import parity_prompt
    from phi3.testing.tiny_model import make_tiny_phi3
    from phi3.testing.variants import VARIANTS

    path = make_tiny_phi3(tmp_path / "phi3-mini-128k", variant="phi3-mini-128k")
    ids = encode_prompt(path, parity_prompt(path, "phi3-mini-128k", "longrope_decode"))
    ours = reference_greedy_ids(path, input_ids=ids, max_new_tokens=32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=32, min_new_tokens=32)
    theirs = [int(i) for i in out[0, len(ids) :]]
    switch_step = VARIANTS["phi3-mini-128k"].original_max_position_embeddings - len(ids)
    assert theirs[:switch_step] == ours[:switch_step]
    assert theirs != ours
