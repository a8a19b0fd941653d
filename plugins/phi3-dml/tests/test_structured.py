"""Structured output through ONNX Runtime GenAI's guidance, beyond the conformance suite's checks.

The suite (test_conformance.py) validates every declared kind over greedy and seeded decodes;
here: how phi3's constraints become guidance, the tools argument of the chat template, and what a
session declares when the runtime's guidance is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import phi3
import pytest
from phi3.testing.structured import TEMPLATE_TOOLS, TOOLS_VARIABLE_TEMPLATE, with_chat_template
from phi3.testing.upstream import upstream_bug
from phi3.types import OutputConstraint

from conftest import PROMPT, LoadDml
from phi3_dml import guidance

MESSAGES = [{"role": "user", "content": "Hi"}]


def test_json_is_compact_unless_the_schema_says_otherwise() -> None:
    kind, data = guidance.guidance(OutputConstraint("json_schema", '{"type":"object"}'))
    assert kind == "json_schema"
    assert json.loads(data) == {"type": "object", "x-guidance": {"whitespace_flexible": False}}
    own = '{"type":"object","x-guidance":{"whitespace_flexible":true,"item_separator":", "}}'
    assert json.loads(guidance.guidance(OutputConstraint("json_object", own))[1])["x-guidance"] == {
        "whitespace_flexible": True,
        "item_separator": ", ",
    }
    assert guidance.guidance(OutputConstraint("regex", "a+")) == ("regex", "a+")


def test_compact_json_on_the_tiny_model(load_dml: LoadDml) -> None:
    """No whitespace between JSON tokens: the tiny model given free whitespace fills its budget with it."""
    model = load_dml("fp32")
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    for seed in (1, 2, 3):
        result = model.generate(PROMPT, max_new_tokens=60, json_schema=schema, do_sample=True, seed=seed)
        assert result.finish_reason == "eos", result.text
        assert isinstance(json.loads(result.text), dict)
        assert not any(c in result.text for c in " \n\t\r"), result.text


def test_a_schema_llguidance_refuses_is_an_unsupported_error_before_decoding(load_dml: LoadDml) -> None:
    model = load_dml("fp32")
    with pytest.raises(phi3.UnsupportedError, match="guidance"):
        # valid JSON Schema, but an unknown format llguidance does not enforce
        model.generate(PROMPT, json_schema={"type": "string", "format": "no-such-format"})


def test_sessions_declare_what_the_runtime_enforces(load_dml: LoadDml) -> None:
    import onnxruntime_genai as og

    model = load_dml("fp32")
    assert model.structured_output == ("json_schema", "json_object", "regex")
    assert guidance.enforced(og, model.session.native.model) == model.structured_output

    class OlderRuntime:  # onnxruntime-genai before set_guidance existed (0.8): nothing to enforce with
        class GeneratorParams:
            def __init__(self, model: object) -> None: ...

    assert guidance.enforced(OlderRuntime, model.session.native.model) == ()


def test_tools_are_refused_not_mangled(load_dml: LoadDml) -> None:
    """phi3-dml does not declare chat_template_tools (see the xfail below): phi3 refuses tools= for the
    model's template with a one-line error, and Model.chat(tools=...) offers them another way."""
    model = load_dml("fp32")
    with pytest.raises(phi3.UnsupportedError, match="tools"):
        model.apply_chat_template(MESSAGES, tools=TEMPLATE_TOOLS)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="onnxruntime-genai 0.18.0 (and 0.13.1) gives a chat template tools in a shape of its own "
    "({name, description, parameters}): tool['function'] is null, so a template written for OpenAI's tools "
    "cannot render. Red = upstream passes them as given: set BackendInfo.chat_template_tools for dml.",
)
def test_tools_reach_the_template_upstream(tiny_phi3: Path, tmp_path: Path) -> None:
    checkpoint = with_chat_template(tiny_phi3, tmp_path / "tiny-tools", TOOLS_VARIABLE_TEMPLATE)
    with phi3.load(checkpoint, backend="dml", device="cpu", precision="fp32") as model:
        plain = model.apply_chat_template(MESSAGES)
        if plain != "<|user|>\nHi<|end|>\n<|assistant|>\n":  # the template itself works without tools
            pytest.fail(f"the test template renders {plain!r} without tools: the setup is wrong, not upstream")
        with upstream_bug(phi3.ConfigError, match=r"Trying to access property ''name'' on null"):
            rendered = model.session.native.apply_chat_template(MESSAGES, TEMPLATE_TOOLS)
        assert rendered == "<|system|>\ntools: get_weather add<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_ignore_eos_with_a_grammar_is_refused_up_front(load_dml: LoadDml) -> None:
    """The runtime would fail mid-stream (EOS masked by min_length, only EOS allowed by the grammar)."""
    model = load_dml("fp32")
    with pytest.raises(phi3.ConfigError, match="ignore_eos"):
        model.generate(PROMPT, max_new_tokens=8, regex="a+", ignore_eos=True)
    assert model.generate(PROMPT, max_new_tokens=8, ignore_eos=True).new_tokens == 8
