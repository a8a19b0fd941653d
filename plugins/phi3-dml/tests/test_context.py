"""The context a loaded model enforces: the model's, a user's ``context_length``, or what memory fits."""

from __future__ import annotations

import phi3
import pytest
from phi3.options import validate_options

from conftest import PROMPT, LoadDml
from phi3_dml import plugin, session

GIB = 1024**3
PHI3_MINI_128K_FP16 = 32 * 2 * 32 * 96 * 2  # bytes of KV cache per token: 393216


def test_kv_bytes_follow_the_graph_io_width() -> None:
    genai = {"model": {"decoder": {"num_hidden_layers": 32, "num_key_value_heads": 32, "head_size": 96}}}
    assert session.kv_bytes_per_token(genai, {"execution_provider": "dml"}, "fp16") == PHI3_MINI_128K_FP16
    assert session.kv_bytes_per_token(genai, {"execution_provider": "dml"}, "int4") == PHI3_MINI_128K_FP16
    assert session.kv_bytes_per_token(genai, {"execution_provider": "cpu"}, "int4") == 2 * PHI3_MINI_128K_FP16
    assert session.kv_bytes_per_token({"model": {}}, {}, "fp32") is None


def test_the_models_context_when_it_fits() -> None:
    assert session._context(None, 131072, PHI3_MINI_128K_FP16, 64 * GIB, True) == (131072, "the model's")
    assert session._context(8192, 131072, PHI3_MINI_128K_FP16, 64 * GIB, True) == (8192, "requested")
    # GPU memory is not measured: no cap
    assert session._context(None, 131072, PHI3_MINI_128K_FP16, 1 * GIB, False)[0] == 131072


def test_a_128k_context_that_does_not_fit_is_capped_and_says_so() -> None:
    context, why = session._context(None, 131072, PHI3_MINI_128K_FP16, 16 * GIB, True)
    assert context == 43008 and context * PHI3_MINI_128K_FP16 <= 16 * GIB  # 48.0 GiB would not fit
    assert "capped from 131072" in why and "48.0 GiB" in why and "context_length=" in why


def test_asking_for_more_than_fits_names_the_memory() -> None:
    with pytest.raises(phi3.ConfigError, match=r"131072-token context needs 48\.0 GiB .* only 16\.0 GiB") as info:
        session._context(131072, 131072, PHI3_MINI_128K_FP16, 16 * GIB, True)
    assert "context_length=43008" in str(info.value)


@pytest.mark.parametrize("bad", [0, 1, True, "4k", 3.5])
def test_context_length_must_be_a_token_count(bad: object) -> None:
    """Checked by phi3 against the backend's option spec, before any hook runs."""
    with pytest.raises(phi3.ConfigError, match=r"context_length=.* is not allowed: it takes a whole number >= 2"):
        validate_options(plugin.phi3_backend_info(), {"context_length": bad})


def test_a_user_context_is_reported_and_enforced(load_dml: LoadDml) -> None:
    full = load_dml("fp32")
    assert full.session.context_length == 512 and "512 tokens (the model's)" in full.session.details["context"]
    model = load_dml("fp32", context_length=16)
    assert model.session.context_length == 16 and model.session.details["context"] == "16 tokens (requested)"
    result = model.generate(PROMPT, max_new_tokens=100, ignore_eos=True)
    assert result.prompt_tokens + result.new_tokens == 16 and result.finish_reason == "length"
    with pytest.raises(phi3.PromptTooLongError, match="context is 16 tokens"):
        model.generate("hello world " * 20, max_new_tokens=2)
    with pytest.raises(phi3.ConfigError, match="longer than this model's context"):
        load_dml("fp32", context_length=513)
