"""Structured output in phi3-core: config checks before any backend runs, and refusal by capability.

A backend that does not declare a kind must never see a request for it: phi3 refuses with
``UnsupportedError`` naming the kind before ``phi3_generate`` is called (never best effort).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from declaring_backend import Declaring

import phi3
from phi3 import plugins
from phi3.testing import reference_backend, structured

REQUESTS: dict[str, dict[str, Any]] = {
    "json_schema": {"json_schema": structured.SCHEMAS["flat_required"]},
    "json_object": {"json_object": True},
    "regex": {"regex": structured.REGEX},
}


def _load(tiny_phi3: Path, plugin: Declaring) -> phi3.Model:
    plugins.get_registry().register(plugin, "declaring")
    return phi3.load(tiny_phi3, backend="declaring", precision="fp32")


def test_a_backend_declaring_nothing_refuses_every_kind_before_generating(tiny_phi3: Path) -> None:
    plugin = Declaring(())
    with _load(tiny_phi3, plugin) as model:
        assert model.structured_output == ()
        for kind, request in REQUESTS.items():
            for method, first in (
                (model.generate, "Hi"),
                (model.stream, "Hi"),
                (model.chat, [{"role": "user", "content": "Hi"}]),
            ):
                with pytest.raises(phi3.UnsupportedError, match=rf"cannot enforce {kind} output") as info:
                    method(first, max_new_tokens=4, **request)  # type: ignore[operator]
                assert "\n" not in str(info.value)
                assert "declaring" in str(info.value) and "no structured output" in str(info.value)
        assert plugin.generate_calls == 0
        assert model.generate("Hi", max_new_tokens=2, ignore_eos=True).new_tokens == 2  # free text still runs
        assert plugin.generate_calls == 1


@pytest.mark.parametrize("level", ["backend", "engine", "session"])
def test_the_narrowest_declaration_decides_what_is_refused(tiny_phi3: Path, level: str) -> None:
    pytest.importorskip("llguidance")
    plugin = Declaring(("regex",), level)
    with _load(tiny_phi3, plugin) as model:
        assert model.structured_output == ("regex",)
        with pytest.raises(phi3.UnsupportedError, match="json_schema output; it enforces regex"):
            model.generate("Hi", max_new_tokens=4, **REQUESTS["json_schema"])
        assert plugin.generate_calls == 0
        result = model.generate("Hi", max_new_tokens=40, regex=structured.REGEX)
        assert plugin.generate_calls == 1
        assert result.finish_reason == "eos"


def test_ignore_eos_keeps_a_constrained_decode_going_on_eos_alone(tiny_phi3: Path) -> None:
    """Benchmarks decode a fixed number of tokens: past the grammar's end only EOS may follow (the
    reference backend must not also suppress EOS, which would leave no token at all)."""
    pytest.importorskip("llguidance")
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        for sampling in ({}, {"do_sample": True, "temperature": 1.0, "seed": 3}):
            result = model.generate("Hi", max_new_tokens=40, ignore_eos=True, regex=structured.REGEX, **sampling)
            assert result.new_tokens == 40 and result.finish_reason == "length"
            assert re.fullmatch(structured.REGEX, result.text), result.text


def test_without_llguidance_the_reference_backend_declares_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from phi3.integrations import transformers_structured

    monkeypatch.setattr(transformers_structured, "module_available", lambda name: name != "llguidance")
    assert reference_backend.phi3_backend_info().structured_output == ()


# -- configuration checks: one line, the field named, before any backend ----------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"json_schema": {"type": "objekt"}}, "json_schema is not a valid JSON Schema at type"),
        (
            {"json_schema": {"properties": {"a": {"minLength": -1}}}},
            "not a valid JSON Schema at properties/a/minLength",
        ),
        ({"json_schema": "{not json"}, "json_schema is not valid JSON"),
        ({"json_schema": "[1, 2]"}, "json_schema must be a JSON object"),
        ({"json_schema": 5}, "json_schema must be a JSON Schema"),
        ({"json_schema": {"enum": {1, 2}}}, "json_schema is not valid JSON"),
        ({"json_schema": {"type": "object"}, "regex": "a+"}, "at most one of json_schema, json_object and regex"),
        ({"json_object": True, "regex": "a+"}, "at most one"),
        ({"json_object": "yes"}, "json_object must be true or false"),
        ({"regex": ""}, "regex must be a non-empty string"),
        ({"regex": "(unclosed"}, "regex does not compile"),
        ({"regex": "(?=a)a"}, "lookaround or a backreference"),
        ({"regex": r"(a)\1"}, "lookaround or a backreference"),
    ],
)
def test_bad_structured_options_are_one_line_config_errors(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(phi3.ConfigError, match="invalid generation config") as info:
        phi3.GenerationConfig(**options)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_schema_is_refused_before_the_backend_sees_it(tiny_phi3: Path) -> None:
    plugin = Declaring(("json_schema", "json_object", "regex"))
    with _load(tiny_phi3, plugin) as model:
        with pytest.raises(phi3.ConfigError, match="json_schema"):
            model.generate("Hi", json_schema={"type": 12})
        assert plugin.generate_calls == 0


def test_a_schema_is_kept_as_compact_text_and_the_config_stays_hashable() -> None:
    schema = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}
    config = phi3.GenerationConfig(json_schema=schema)  # type: ignore[arg-type]
    assert config.json_schema == '{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"integer"}}}'
    assert hash(config) == hash(phi3.GenerationConfig(json_schema=json.dumps(schema, separators=(",", ":"))))
    assert config.output_constraint == phi3.OutputConstraint("json_schema", config.json_schema)
    assert phi3.GenerationConfig(json_object=True).output_constraint == phi3.OutputConstraint(
        "json_object", '{"type":"object"}'
    )
    assert phi3.GenerationConfig().output_constraint is None
    with pytest.raises(phi3.ConfigError, match="at most one"):
        config.replace(regex="x")
    assert config.replace(json_schema=None, regex="x").output_constraint == phi3.OutputConstraint("regex", "x")
