"""The family variants of the tiny Phi-3 and the fp32 reference on them, with real torch/transformers.

The point of the variants is that a backend that gets a layout detail wrong produces different
greedy ids; these tests prove that for each modelled mistake, and that the reference itself is
right where transformers' generate() is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3.testing.bytelevel_tokenizer import PHI4_CHAT_TEMPLATE, PHI4_SPECIAL_TOKENS, phi4_tokenizer_vocab_size
from phi3.testing.parity import CASES, case_applies, parity_prompt
from phi3.testing.reference import (
    encode_prompt,
    reference_greedy_ids,
    reference_logprobs,
    reference_next_token_logits,
)
from phi3.testing.tiny_model import make_tiny_phi3
from phi3.testing.variants import MISTAKES, VARIANTS, applicable_mistakes, write_mistaken_copy

SRC = Path(__file__).resolve().parents[1] / "src"
NEW = 32


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family")
    return {name: make_tiny_phi3(root / name, variant=name) for name in VARIANTS}


def _config(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "config.json").read_text(encoding="utf-8")))


# -- layouts ----------------------------------------------------------------------------------------


def test_configs_mirror_the_real_layouts(family: dict[str, Path]) -> None:
    from transformers import AutoConfig

    for name, path in family.items():
        tiny, raw = VARIANTS[name], _config(path)
        assert raw["architectures"] == ["Phi3ForCausalLM"]
        assert "rope_parameters" not in raw, "config.json must use the real checkpoints' rope_scaling layout"
        assert raw["sliding_window"] == tiny.sliding_window
        assert raw["tie_word_embeddings"] is tiny.tie_word_embeddings
        scaling = raw["rope_scaling"]
        if tiny.longrope:
            assert scaling["type"] == "longrope"
            assert len(scaling["short_factor"]) == len(scaling["long_factor"]) == tiny.rotary_dim // 2
            assert scaling["short_factor"] != scaling["long_factor"]
            assert raw["original_max_position_embeddings"] * 32 == raw["max_position_embeddings"]  # 4096 -> 131072
        else:
            assert scaling is None
            assert raw["sliding_window"] == raw["max_position_embeddings"] // 2 - 1  # 2047 of 4096
        # transformers reads it back with the same rope parameters (validation included)
        cfg: Any = AutoConfig.from_pretrained(path)
        assert cfg.rope_parameters["rope_type"] == ("longrope" if tiny.longrope else "default")
        assert cfg.rope_parameters["partial_rotary_factor"] == tiny.partial_rotary_factor
        assert cfg.hidden_size // cfg.num_attention_heads == tiny.head_dim
    assert VARIANTS["phi3-medium-4k"].head_dim == 128
    assert VARIANTS["phi3-medium-128k"].num_attention_heads // VARIANTS["phi3-medium-128k"].num_key_value_heads == 4
    phi4 = VARIANTS["phi4-mini"]
    assert (phi4.num_attention_heads // phi4.num_key_value_heads, phi4.partial_rotary_factor) == (3, 0.75)


def test_every_catalogue_entry_has_a_variant() -> None:
    from phi3.catalogue import CATALOGUE

    assert set(VARIANTS) == set(CATALOGUE)
    assert {v.real for v in VARIANTS.values()} == {e.repo_id for e in CATALOGUE.values()}


def test_tied_embeddings_are_saved_once_and_bf16_is_an_option(family: dict[str, Path], tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(family["phi4-mini"] / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    bf16 = make_tiny_phi3(tmp_path / "bf16", variant="phi3-mini-128k", dtype="bfloat16")
    with safe_open(str(bf16 / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}  # noqa: SIM118


def test_variant_builds_are_byte_identical(family: dict[str, Path], tmp_path: Path) -> None:
    again = make_tiny_phi3(tmp_path / "again", variant="phi4-mini")
    for file in sorted(family["phi4-mini"].iterdir()):
        assert file.read_bytes() == (again / file.name).read_bytes(), file.name


def test_unknown_variant_and_bad_overrides_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="phi3-mini-4k"):
        make_tiny_phi3(tmp_path / "x", variant="phi2")
    with pytest.raises(ValueError, match="head_dim"):  # the LongRoPE tables are sized for head_dim 32
        make_tiny_phi3(tmp_path / "y", variant="phi3-mini-128k", hidden_size=256)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_vocab_equal_to_a_projection_width_is_refused(tmp_path: Path) -> None:
    """ONNX Runtime GenAI's builder takes any Linear as wide as the vocab for the LM head."""
    with pytest.raises(ValueError, match="gate_up_proj"):
        make_tiny_phi3(tmp_path / "a", vocab_size=512, hidden_size=128, intermediate_size=256)
    with pytest.raises(ValueError, match="intermediate_size"):
        make_tiny_phi3(tmp_path / "b", vocab_size=640, hidden_size=128, intermediate_size=640)
    with pytest.raises(ValueError, match="qkv_proj"):
        make_tiny_phi3(tmp_path / "c", vocab_size=576, hidden_size=192, num_attention_heads=6, intermediate_size=320)
    assert not any(tmp_path.iterdir())
    # left unset, the vocabulary steps past the collision instead (512 -> 544 here)
    built = make_tiny_phi3(tmp_path / "d", hidden_size=128, intermediate_size=256)
    assert _config(built)["vocab_size"] == 544


# -- Phi-4-mini's tokenizer -------------------------------------------------------------------------


def test_phi4_tokenizer_is_byte_level_without_bos(family: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    path = family["phi4-mini"]
    tok: Any = AutoTokenizer.from_pretrained(path)
    text = "héllo wörld 😀 日本語\n  two spaces"
    ids = tok.encode(text)
    assert ids == tok.encode(text, add_special_tokens=False), "Phi-4-mini adds no BOS"
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok.encode("the quick brown fox"))
    assert any(p.startswith("Ġ") for p in pieces) and not any("▁" in p for p in pieces), pieces  # GPT-2 spaces
    special = [tok.convert_tokens_to_ids(t) for t in PHI4_SPECIAL_TOKENS]
    assert special == list(range(phi4_tokenizer_vocab_size() - len(PHI4_SPECIAL_TOKENS), phi4_tokenizer_vocab_size()))
    for token, token_id in zip(PHI4_SPECIAL_TOKENS, special, strict=True):
        assert tok.encode(token) == [token_id]
    assert tok.bos_token == tok.eos_token == tok.pad_token == "<|endoftext|>"
    config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (config["tokenizer_class"], config["add_bos_token"]) == ("GPT2Tokenizer", False)
    assert config["chat_template"] == PHI4_CHAT_TEMPLATE
    generation = json.loads((path / "generation_config.json").read_text())
    end, eot = tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert generation["eos_token_id"] == [end, eot]
    assert _config(path)["bos_token_id"] == eot


def test_phi4_chat_template_with_tools(family: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(family["phi4-mini"])
    tools = '[{"name": "get_weather", "parameters": {"city": {"type": "str"}}}]'
    messages = [
        {"role": "system", "content": "You are helpful.", "tools": tools},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|system|>You are helpful.<|tool|>{tools}<|/tool|><|end|><|user|>Weather in Paris?<|end|><|assistant|>"
    )
    plain = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert plain == "<|user|>Hi<|end|><|endoftext|>"


# -- the reference on the variants ------------------------------------------------------------------


def _cases(name: str) -> list[str]:
    return [case for case in CASES if case_applies(name, case)]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_reference_loop_equals_full_recompute(family: dict[str, Path], name: str) -> None:
    path = family[name]
    for case in _cases(name):
        prompt = parity_prompt(path, name, case)
        cached = reference_greedy_ids(path, prompt, max_new_tokens=NEW)
        assert len(set(cached)) >= 4, f"{name}/{case}: a degenerate continuation tells little: {cached}"
        if case != "short":  # 16 tokens cross the LongRoPE switch (at 8-9) and run past the window
            assert cached[:16] == reference_greedy_ids(path, prompt, max_new_tokens=16, recompute=True), case


def test_prompts_sit_where_the_cases_say(family: dict[str, Path]) -> None:
    for name, path in family.items():
        tiny = VARIANTS[name]
        for case in _cases(name):
            n = len(encode_prompt(path, parity_prompt(path, name, case)))
            assert n + NEW <= tiny.max_position_embeddings
            if case == "longrope_prompt":
                assert n > tiny.original_max_position_embeddings
            elif case == "longrope_decode":
                assert n < tiny.original_max_position_embeddings < n + NEW
            elif case == "past_window":
                assert tiny.sliding_window is not None and n > tiny.sliding_window


def test_generate_loses_context_at_the_longrope_switch(family: dict[str, Path]) -> None:
    """transformers 5.5.4 generate() diverges where the sequence crosses the switch; our loop does not.

    When this fails, transformers fixed Phi3ForCausalLM.prepare_inputs_for_generation: the
    reference backend's use_cache=False workaround can then go (check the version first).
    """
    import torch

    from phi3.testing.reference import _load

    path = family["phi3-mini-128k"]
    ids = encode_prompt(path, parity_prompt(path, "phi3-mini-128k", "longrope_decode"))
    ours = reference_greedy_ids(path, input_ids=ids, max_new_tokens=NEW)
    model, _ = _load(path)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW)
    theirs = [int(i) for i in out[0, len(ids) :]]
    switch_step = VARIANTS["phi3-mini-128k"].original_max_position_embeddings - len(ids)
    assert theirs[:switch_step] == ours[:switch_step]
    assert theirs != ours


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_modelled_mistake_changes_the_greedy_ids(family: dict[str, Path], name: str, tmp_path: Path) -> None:
    """For each mistake that applies to the layout, some case's 32 greedy ids change.

    This is what makes the variants worth testing on: a backend with that bug fails the parity
    suite. Where it must show is pinned too: an ignored window only past the window, a LongRoPE
    table that never switches only past the switch.
    """
    path = family[name]
    mistakes = applicable_mistakes(_config(path))
    expected = {
        "phi3-mini-4k": {"rope_theta_x10", "sliding_window_ignored"},
        "phi3-medium-4k": {"rope_theta_x10", "sliding_window_ignored"},
        "phi4-mini": set(MISTAKES) - {"sliding_window_ignored"},
    }.get(name, set(MISTAKES) - {"sliding_window_ignored", "partial_rotary_ignored"})
    assert set(mistakes) == expected
    right: dict[str, list[int]] = {}

    def changes(wrong_dir: Path, case: str) -> bool:
        prompt = parity_prompt(path, name, case)
        if case not in right:
            right[case] = reference_greedy_ids(path, prompt, max_new_tokens=NEW)
        return reference_greedy_ids(wrong_dir, prompt, max_new_tokens=NEW) != right[case]

    for mistake in mistakes:
        wrong_dir = write_mistaken_copy(path, mistake, tmp_path / mistake)
        if mistake == "longrope_never_switches":  # before the switch the short factors are right
            assert not changes(wrong_dir, "short")
            assert changes(wrong_dir, "longrope_decode") and changes(wrong_dir, "longrope_prompt")
        elif mistake == "sliding_window_ignored":  # the window only matters past it
            assert not changes(wrong_dir, "short")
            assert changes(wrong_dir, "past_window")
        else:
            assert any(changes(wrong_dir, case) for case in _cases(name)), (
                f"{name}: mistake {mistake} leaves every case's greedy ids unchanged"
            )


def test_reference_logprobs_are_teacher_forced(family: dict[str, Path]) -> None:
    import numpy as np

    path = family["phi4-mini"]
    ids = encode_prompt(path, "The quick brown fox")
    greedy = reference_greedy_ids(path, input_ids=ids, max_new_tokens=6)
    logprobs = reference_logprobs(path, ids + greedy)
    assert logprobs.shape == (len(ids) + 6, VARIANTS["phi4-mini"].vocab_size)
    assert np.allclose(np.exp(logprobs).sum(axis=-1), 1.0, atol=1e-4)
    assert [int(i) for i in logprobs[len(ids) - 1 : -1].argmax(axis=-1)] == greedy[:6]
    assert int(logprobs[len(ids) - 1].argmax()) == int(reference_next_token_logits(path, ids).argmax())


def test_kit_modules_import_no_heavy_library() -> None:
    code = (
        "import sys, phi3.testing.variants, phi3.testing.parity, phi3.testing.discriminating\n"
        "import phi3.testing.bytelevel_tokenizer, phi3.testing.reference\n"
        "print(','.join(m for m in ('torch', 'transformers', 'tokenizers', 'numpy') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == ""
