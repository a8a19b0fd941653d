"""The offline tiny Phi-3 builder and the transformers fp32 reference, with real torch/transformers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_next_token_logits
from phi3.testing.tiny_model import (
    PHI3_CHAT_TEMPLATE,
    TINY_PHI3_SPECIAL_TOKENS,
    make_tiny_phi3,
    tokenizer_vocab_size,
)

SRC = Path(__file__).resolve().parents[1] / "src"
# ~100 MB of weights: long enough a write to be killed in the middle of it
BIGGER: dict[str, Any] = {"vocab_size": 8192, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 4}
TEXT = "héllo wörld 😀 日本語"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi3(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tokenizer(tiny: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


def test_same_arguments_give_byte_identical_files(tiny: Path, tmp_path: Path) -> None:
    again = make_tiny_phi3(tmp_path / "again")
    first, second = _files(tiny), _files(again)
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "phi3-tiny.json",
    } <= set(first)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary build folder left behind"


def test_existing_build_is_reused_and_other_arguments_rebuild(tmp_path: Path) -> None:
    target = make_tiny_phi3(tmp_path / "m")
    weights = target / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert make_tiny_phi3(tmp_path / "m") == target
    assert weights.stat().st_mtime_ns == mtime  # not rebuilt
    make_tiny_phi3(tmp_path / "m", seed=1)
    assert json.loads((target / "phi3-tiny.json").read_text())["args"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_killed_build_leaves_no_partial_model(tmp_path: Path) -> None:
    """SIGKILL a real build midway: nothing appears at the target, and the next build cleans up."""
    target = tmp_path / "model"
    code = f"from phi3.testing.tiny_model import make_tiny_phi3; make_tiny_phi3({str(target)!r}, **{BIGGER!r})"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 120
        # wait until the tokenizer is written: the model weights come next
        while not (building := list(tmp_path.glob(".model.tmp-*/tokenizer.json"))) and proc.poll() is None:
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert building, f"the build process exited ({proc.returncode}) before it started writing"
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    make_tiny_phi3(target, **BIGGER)
    assert (target / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the dead build's scratch folder is gone


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_tiny_phi3(tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_different_seed_gives_different_weights(tiny: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    other = make_tiny_phi3(tmp_path / "seed1", seed=1)
    a, b = load_file(tiny / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    name = "model.layers.0.self_attn.qkv_proj.weight"
    assert a[name].shape == b[name].shape
    assert (a[name] != b[name]).mean() > 0.99
    assert (tiny / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_vocab_too_small_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        make_tiny_phi3(tmp_path / "small", vocab_size=tokenizer_vocab_size() - 1)
    assert not (tmp_path / "small").exists()


def test_utf8_and_emoji_round_trip(tokenizer: Any) -> None:
    tok = tokenizer
    for text in (TEXT, " leading space", "two  spaces\nand a newline\ttab", "ü", "The quick brown fox"):
        ids = tok.encode(text)
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    # the emoji is not in the trained vocabulary: it must come out as byte-fallback tokens
    assert "<0xF0>" in tok.convert_ids_to_tokens(tok.encode("😀"))


def test_special_tokens_and_chat_template(tiny: Path, tokenizer: Any) -> None:
    tok = tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in TINY_PHI3_SPECIAL_TOKENS]
    base = tokenizer_vocab_size() - len(TINY_PHI3_SPECIAL_TOKENS)
    assert ids == list(range(base, base + len(TINY_PHI3_SPECIAL_TOKENS)))
    for token, token_id in zip(TINY_PHI3_SPECIAL_TOKENS, ids, strict=True):
        assert tok.encode(token, add_special_tokens=False) == [token_id]
    assert (tok.bos_token_id, tok.unk_token_id) == (1, 0)
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    closed = tok.apply_chat_template(messages, tokenize=False)
    assert closed.endswith("<|user|>\nHi<|end|>\n<|endoftext|>")
    chat_ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chat_ids[0] == ids[TINY_PHI3_SPECIAL_TOKENS.index("<|system|>")]
    assert chat_ids[-1] == ids[TINY_PHI3_SPECIAL_TOKENS.index("<|assistant|>")]

    # other runtimes read the template from tokenizer_config.json, transformers 5 from the .jinja file
    config = json.loads((tiny / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == PHI3_CHAT_TEMPLATE
    assert (tiny / "chat_template.jinja").read_text(encoding="utf-8") == PHI3_CHAT_TEMPLATE
    # transformers 5 writes LlamaTokenizer, 4.x (phi3-core[testing] allows 4.56) LlamaTokenizerFast: both load
    assert config["tokenizer_class"] in ("LlamaTokenizer", "LlamaTokenizerFast")


def test_model_config_and_generation_config(tiny: Path, tokenizer: Any) -> None:
    tok = tokenizer
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    end = tok.convert_tokens_to_ids("<|end|>")
    config = json.loads((tiny / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, eot, eot)
    assert config["tie_word_embeddings"] is False
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert "auto_map" not in config
    generation = json.loads((tiny / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [eot, end]


def test_model_loads_and_generates(tiny: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(tiny)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert model.config.vocab_size == 512
    with torch.no_grad():
        out = model.generate(
            torch.tensor([[1, 300, 301]]),
            max_new_tokens=5,
            do_sample=False,
            min_new_tokens=5,
            pad_token_id=model.config.pad_token_id,
        )
    assert out.shape == (1, 8)
    assert int(out[0, 3:].max()) < tokenizer_vocab_size()  # padding rows are never generated


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, phi3.testing.tiny_model, phi3.testing.reference\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'sentencepiece') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == ""


def test_reference_greedy_ids_exact_length_and_deterministic(tiny: Path) -> None:
    ids = reference_greedy_ids(tiny, "The quick brown fox", max_new_tokens=12)
    assert len(ids) == 12
    assert all(0 <= i < tokenizer_vocab_size() for i in ids)
    assert reference_greedy_ids(tiny, input_ids=encode_prompt(tiny, "The quick brown fox"), max_new_tokens=12) == ids
    assert reference_greedy_ids(tiny, "The quick brown fox", max_new_tokens=5) == ids[:5]
    # the first greedy token is the argmax of the next-token logits
    logits = reference_next_token_logits(tiny, "The quick brown fox")
    assert logits.shape == (512,)
    assert logits.dtype.name == "float32"
    assert int(logits.argmax()) == ids[0]


def test_reference_ignore_eos(tiny: Path, tmp_path: Path) -> None:
    """Rig the LM head so greedy decoding wants <|end|> first: ignore_eos must still give N tokens."""
    import shutil

    from safetensors.numpy import load_file, save_file

    prompt = encode_prompt(tiny, "The quick brown fox")
    natural = reference_greedy_ids(tiny, input_ids=prompt, max_new_tokens=6)
    rigged = tmp_path / "rigged"
    shutil.copytree(tiny, rigged)
    tensors = load_file(rigged / "model.safetensors")
    end = json.loads((tiny / "generation_config.json").read_text())["eos_token_id"][1]
    tensors["lm_head.weight"][end] = 10 * tensors["lm_head.weight"][natural[0]]
    save_file(tensors, rigged / "model.safetensors", metadata={"format": "pt"})

    assert int(reference_next_token_logits(rigged, prompt).argmax()) == end
    assert reference_greedy_ids(rigged, input_ids=prompt, max_new_tokens=6, ignore_eos=False) == [end]
    ignoring = reference_greedy_ids(rigged, input_ids=prompt, max_new_tokens=6, ignore_eos=True)
    assert len(ignoring) == 6
    assert end not in ignoring
    assert ignoring[0] == natural[0]


def test_reference_rejects_ambiguous_input(tiny: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        reference_greedy_ids(tiny, "a", input_ids=[1, 2])
    with pytest.raises(ValueError, match="exactly one"):
        reference_greedy_ids(tiny)


def test_sentencepiece_mode_is_reproducible_and_consistent(tmp_path: Path) -> None:
    """tokenizer.model (for llama.cpp) and tokenizer.json must encode identically, byte-stable."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer

    first = make_tiny_phi3(tmp_path / "a", sentencepiece_model=True)
    second = make_tiny_phi3(tmp_path / "b", sentencepiece_model=True)
    assert "tokenizer.model" in _files(first)
    assert _files(first) == _files(second)

    sp = spm.SentencePieceProcessor(model_file=str(first / "tokenizer.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    assert sp.get_piece_size() == tokenizer_vocab_size() - len(TINY_PHI3_SPECIAL_TOKENS)
    tok = AutoTokenizer.from_pretrained(first)
    texts = [
        TEXT,
        " leading",
        "two  spaces\nnew line",
        "Quantization stores 4-bit weights; 12345!",
        "Le café est très chaud.",
        "Über die Straße",
        "résumé naïve jalapeño 🚀",
    ]
    for text in texts:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), text
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == text
    assert tok.convert_tokens_to_ids("<|user|>") == tokenizer_vocab_size() - 1
