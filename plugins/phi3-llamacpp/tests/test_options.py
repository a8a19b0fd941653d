"""The llamacpp backend's options are typed specs that phi3 checks before the backend runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3.plugins import get_registry


def test_options_are_declared_as_specs() -> None:
    info = get_registry().entry("llamacpp").info
    assert info is not None
    assert {spec.name for spec in info.options} == {
        "quant",
        "n_ctx",
        "n_threads",
        "n_gpu_layers",
        "flash_attn",
        "full_attention",
    }
    assert info.artifact_options == ("quant",)


@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        ({"n_ctx": "lots"}, "a whole number >= 1"),
        ({"n_ctx": 0}, "a whole number >= 1"),
        ({"n_gpu_layers": -2}, "a whole number >= 0"),
        ({"flash_attn": "maybe"}, "true or false"),
        ({"quant": "Q5_K"}, "one of Q4_0, Q4_K_M, Q8_0, F16, F32"),
    ],
)
def test_a_bad_value_is_refused_by_phi3_naming_option_and_allowed(
    tiny_phi3: Path, option: dict[str, Any], allowed: str
) -> None:
    ((name, value),) = option.items()
    with pytest.raises(phi3.ConfigError) as caught:
        phi3.load(tiny_phi3, backend="llamacpp", device="CPU", precision="int4", **option)
    assert f"option {name}={value!r} is not allowed" in str(caught.value)
    assert allowed in str(caught.value)


def test_text_values_are_coerced(tiny_phi3: Path) -> None:
    with phi3.load(
        tiny_phi3, backend="llamacpp", device="CPU", precision="int4", n_ctx="256", flash_attn="false"
    ) as model:
        assert model.context_length == 256


def test_a_quant_of_another_precision_is_refused_by_the_plugin(tiny_phi3: Path) -> None:
    """phi3 checks the name; only the plugin knows which types a precision takes."""
    with pytest.raises(phi3.ConfigError, match=r"quant='Q8_0' is not available for precision int4"):
        phi3.load(tiny_phi3, backend="llamacpp", device="CPU", precision="int4", quant="q8_0")


def test_the_plugin_has_the_engine_shape(tiny_phi3: Path) -> None:
    """Generation, the chat template and unload are phi3.engine_hooks' forwarding hooks; the session's
    native object is the engine, and unloading closes its llama.cpp model."""
    import phi3.engine_hooks as hooks
    import phi3_llamacpp.plugin as plugin
    from phi3_llamacpp.engine import LlamaEngine

    assert plugin.phi3_generate is hooks.phi3_generate
    assert plugin.phi3_apply_chat_template is hooks.phi3_apply_chat_template
    assert plugin.phi3_unload is hooks.phi3_unload
    model = phi3.load(tiny_phi3, backend="llamacpp", device="CPU", precision="fp32")
    engine = model.session.native
    assert isinstance(engine, LlamaEngine)
    assert model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=2).token_ids
    model.close()
    assert engine.runtime.llama is None
