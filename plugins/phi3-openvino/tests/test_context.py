"""The session's context (issue 9, item 4): reported, enforced, raised with ``-O context_length``, memory named."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _ov_common import F32

import phi3
from phi3.testing.parity import parity_prompt
from phi3_openvino.context import DEFAULT_CONTEXT_LENGTH, available_memory, kv_bytes_per_token, session_context

# Phi-3-mini-128k's real config.json (the fields that size the KV cache)
MINI_128K = {
    "hidden_size": 3072,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "max_position_embeddings": 131072,
}


def _artifact(tmp_path: Path, config: dict[str, Any]) -> Any:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return SimpleNamespace(path=tmp_path, context_length=config["max_position_embeddings"])


def test_a_128k_model_holds_8k_by_default_and_max_asks_for_all(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, MINI_128K)
    plenty = 1024**4
    assert session_context(artifact, None, available=plenty) == DEFAULT_CONTEXT_LENGTH == 8192
    assert session_context(artifact, "max", available=plenty) == 131072
    assert session_context(artifact, "32768", available=plenty) == 32768


def test_a_context_that_does_not_fit_names_the_memory(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path, MINI_128K)
    assert kv_bytes_per_token(MINI_128K) == 2 * 32 * 32 * 96 * 2  # 384 KiB per token at fp16
    with pytest.raises(phi3.ConfigError) as caught:
        session_context(artifact, "max", available=16 * 1024**3)
    assert "48.0 GiB of KV cache" in str(caught.value) and "16.0 GiB" in str(caught.value)
    assert "context_length" in (caught.value.hint or "") and "43690 tokens fit" in (caught.value.hint or "")


@pytest.mark.parametrize("value", [131073, 0, "lots", 1.5, True])
def test_bad_context_lengths_are_config_errors(tmp_path: Path, value: Any) -> None:
    with pytest.raises(phi3.ConfigError):
        session_context(_artifact(tmp_path, MINI_128K), value, available=1024**4)


def test_available_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert available_memory(meminfo) == 8000000 * 1024
    assert available_memory(tmp_path / "missing") is None


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phi3.testing.tiny_model import make_tiny_phi3

    return make_tiny_phi3(tmp_path_factory.mktemp("context") / "phi3-mini-128k", variant="phi3-mini-128k")


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_the_session_reports_and_enforces_its_context(long_model: Path, engine: str) -> None:
    prompt = parity_prompt(long_model, "phi3-mini-128k", "longrope_prompt")  # 74 tokens
    load: dict[str, Any] = {"backend": "openvino", "device": "CPU", "precision": "fp16", "engine": engine, **F32}
    with phi3.load(long_model, context_length=80, **load) as model:
        assert model.session.context_length == model.context_length == 80
        assert model.artifact.context_length == 2048
        result = model.generate(prompt, max_new_tokens=32, ignore_eos=True)
        assert (result.new_tokens, result.finish_reason) == (80 - 74, "length")
        with pytest.raises(phi3.PromptTooLongError) as caught:
            model.generate(prompt + " " + prompt, max_new_tokens=4)
        assert "holds 80 tokens" in str(caught.value) and "context_length" in (caught.value.hint or "")
    with pytest.raises(phi3.ConfigError, match="more than the model supports"):
        phi3.load(long_model, context_length=4096, **load)
