"""llama.cpp's converter as phi3-llamacpp drives it, and the upstream gaps its driver works around.

Each ``test_upstream_*`` runs the *unpatched* converter (or llama.cpp's own naming rule) on a
checkpoint it refuses or mis-tokenizes today (llama-cpp-python 0.3.36) and is a strict xfail: it
turns red when upstream handles the checkpoint itself, and the workaround in
:mod:`phi3_llamacpp.convert_driver` / :func:`phi3_llamacpp.quantize.model_name` can go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phi3.cache import phi3_home
from phi3_llamacpp.converter import convert, converter_sources

UPSTREAM = "llama-cpp-python 0.3.36's vendored convert_hf_to_gguf.py"


@pytest.fixture(scope="module")
def sources() -> Path:
    return converter_sources(phi3_home() / "llamacpp-converter")


@pytest.fixture(scope="module")
def json_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phi3.testing.tiny_model import make_tiny_phi3

    model = make_tiny_phi3(tmp_path_factory.mktemp("models") / "phi3-mini-4k", variant="phi3-mini-4k")
    assert not (model / "tokenizer.model").exists()
    return model


@pytest.fixture(scope="module")
def phi4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phi3.testing.tiny_model import make_tiny_phi3

    return make_tiny_phi3(tmp_path_factory.mktemp("models") / "phi4-mini", variant="phi4-mini")


def _upstream_convert(sources: Path, model: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The converter script exactly as llama.cpp ships it (no phi3 driver)."""
    command = [sys.executable, str(sources / "convert_hf_to_gguf.py"), str(model), "--outtype", "f32"]
    env = {**os.environ, "PYTHONPATH": str(sources / "gguf-py")}
    return subprocess.run([*command, "--outfile", str(out)], capture_output=True, text=True, env=env, check=False)


def _assert_converted(done: subprocess.CompletedProcess[str], bug: str) -> None:
    """The conversion succeeded, or failed with the upstream bug's own error (an AssertionError, which the
    strict xfail expects); a failure of any other kind is a RuntimeError, which turns the xfail red."""
    if done.returncode != 0 and bug not in done.stderr:
        raise RuntimeError(f"the converter failed, but not with {bug!r}: {done.stderr[-400:]}")
    assert done.returncode == 0, done.stderr[-400:]


def _tokenizes_like_transformers(gguf: Path, model: Path, text: str) -> bool:
    import llama_cpp
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(model)(text, add_special_tokens=True)["input_ids"]
    vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        return bool(vocab.tokenize(text.encode(), add_bos=True, special=True) == list(expected))
    finally:
        vocab.close()


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=f"{UPSTREAM}: the Phi-3 path needs tokenizer.model ('Missing ...')"
)
def test_upstream_converts_a_phi3_checkpoint_without_tokenizer_model(sources: Path, json_only: Path, tmp_path: Path):
    done = _upstream_convert(sources, json_only, tmp_path / "out.gguf")
    _assert_converted(done, bug=f"ValueError: Error: Missing {json_only / 'tokenizer.model'}")


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason=f"{UPSTREAM}: unknown pre-tokenizer hash for a GPT-2 byte-level BPE"
)
def test_upstream_converts_the_tiny_phi4_mini_tokenizer(sources: Path, phi4: Path, tmp_path: Path):
    done = _upstream_convert(sources, phi4, tmp_path / "out.gguf")
    _assert_converted(done, bug="NotImplementedError: BPE pre-tokenizer was not recognized")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="llama.cpp (llama-cpp-python 0.3.36) rstrips text after Phi-3's special tokens only when general.name "
    "contains 'phi3'/'phi-3'; a GGUF named after its folder tokenizes chat prompts differently",
)
def test_upstream_strips_after_special_tokens_whatever_the_gguf_name(sources: Path, json_only: Path, tmp_path: Path):
    out = tmp_path / "named-after-folder.gguf"
    convert(sources, json_only, out, "f32", model_name="snapshot-3a4b5c")
    assert _tokenizes_like_transformers(out, json_only, "<|user|>\nHello<|end|>\n<|assistant|>\n")


def test_driver_output_tokenizes_like_transformers(sources: Path, json_only: Path, phi4: Path, tmp_path: Path):
    """The workarounds' output: the same ids as the checkpoint's own tokenizer, specials included."""
    from phi3_llamacpp.quantize import TOKENIZER_SAMPLES, model_name

    for model in (json_only, phi4):
        out = tmp_path / f"{model.name}.gguf"
        convert(sources, model, out, "f32", model_name(model))
        for text in TOKENIZER_SAMPLES:
            assert _tokenizes_like_transformers(out, model, text), (model.name, text)


def test_model_name_follows_the_tokenizers_strip_flags(json_only: Path, phi4: Path):
    from phi3_llamacpp.quantize import model_name

    assert model_name(json_only) == "Phi3"  # Phi-3's <|user|> etc. carry rstrip
    assert model_name(phi4) == "Phi"  # Phi-4-mini's strip nothing: llama.cpp must not strip either


def test_quantizing_shows_phi3s_progress_not_llama_cpps_log(json_only: Path, tmp_path: Path) -> None:
    """`phi3 quantize --backend llamacpp` prints phi3's own steps; llama.cpp's per-tensor quantize log and its
    loader's lines (hundreds on a real model) stay off the terminal, in a fresh process as a user runs it."""
    env = {**os.environ, "PHI3_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "phi3", "quantize", str(json_only), "--backend", "llamacpp", "--precision", "int4"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-800:]
    assert "phi3: quantizing to Q4_0 (2/3)" in done.stderr
    llama_lines = [line for line in done.stderr.splitlines() if not line.startswith("phi3:")]
    assert llama_lines == [], llama_lines[:5]
