"""Tool calling on the reference backend (real transformers + llguidance) and the tiny models.

Random weights never write a tool call on their own, so every call that validates here was made
valid by the constraint. Phi-3 (no tool format in its template) takes phi3's constrained JSON
format; the tiny Phi-4-mini has the real template and tool tokens and takes the native one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3 import tools as tool_calling
from phi3.messages import check_messages
from phi3.testing import structured
from phi3.testing.tiny_model import make_tiny_phi3

pytest.importorskip("llguidance", reason="tool calling needs structured output: pip install phi3-core[structured]")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = structured.WEATHER_TOOL
ORDER = {
    "type": "function",
    "function": {
        "name": "place_order",
        "description": "Order items",
        "parameters": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
                            "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                        },
                        "required": ["sku", "qty"],
                        "additionalProperties": False,
                    },
                    "minItems": 1,
                    "maxItems": 2,
                },
                "express": {"type": "boolean"},
            },
            "required": ["items", "express"],
            "additionalProperties": False,
        },
    },
}
NOW = {"type": "function", "function": {"name": "current_time", "description": "The time now"}}
TOOL_SETS = {"one": [WEATHER], "two": [WEATHER, ORDER], "nested_and_no_params": [ORDER, NOW]}
SEEDS = (1, 2, 3)
BUDGET = 200
"""Tokens for one call of the longest tool (the tiny tokenizer spells JSON almost byte by byte)."""
PARALLEL_BUDGET = 640
"""Up to MAX_PARALLEL_CALLS calls: random weights keep adding calls until the schema's maxItems."""
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Paris?"}]


def _register_reference() -> None:
    """Module fixtures load before the per-test registry fixture runs: register it for them."""
    from phi3 import plugins
    from phi3.testing import reference_backend

    registry = plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Phi-3 (a 2048-token layout: the tool description is long in the tiny tokenizer) and Phi-4-mini."""
    root = tmp_path_factory.mktemp("tool-models")
    _register_reference()
    loaded = {
        "phi3": phi3.load(
            str(make_tiny_phi3(root / "phi3", max_position_embeddings=2048)), backend="reference", precision="fp32"
        ),
        "phi4": phi3.load(
            str(make_tiny_phi3(root / "phi4", variant="phi4-mini")), backend="reference", precision="fp32"
        ),
    }
    yield loaded
    for model in loaded.values():
        model.close()


def _parameters(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        tool["function"]["name"]: tool["function"].get("parameters", {"type": "object", "properties": {}})
        for tool in tools
    }


def _configs() -> list[dict[str, Any]]:
    return [{}] + [{"do_sample": True, "temperature": 1.0, "seed": seed} for seed in SEEDS]


def _check_calls(result: phi3.GenerationResult, tools: list[dict[str, Any]]) -> None:
    schemas = _parameters(tools)
    assert result.finish_reason == "tool_calls", (result.finish_reason, result.text)
    assert result.tool_calls
    for call in result.tool_calls:
        assert call.name in schemas
        jsonschema.validate(dict(call.arguments), schemas[call.name])
        assert call.id.startswith("call_") and len(call.id) > 10
    assert len({call.id for call in result.tool_calls}) == len(result.tool_calls)


def test_native_format_is_read_from_the_template(models: dict[str, phi3.Model]) -> None:
    assert tool_calling.native_format(models["phi4"]) is True
    assert tool_calling.native_format(models["phi3"]) is False


@pytest.mark.parametrize("family", ["phi3", "phi4"])
@pytest.mark.parametrize("tool_set", sorted(TOOL_SETS))
def test_required_always_calls_with_valid_arguments(models: dict[str, phi3.Model], family: str, tool_set: str) -> None:
    tools = TOOL_SETS[tool_set]
    for options in _configs():
        result = models[family].chat(
            MESSAGES, tools=tools, tool_choice="required", max_new_tokens=PARALLEL_BUDGET, **options
        )
        _check_calls(result, tools)
        assert len(result.tool_calls) <= tool_calling.MAX_PARALLEL_CALLS


@pytest.mark.parametrize("family", ["phi3", "phi4"])
def test_named_function_is_the_one_called(models: dict[str, phi3.Model], family: str) -> None:
    tools = TOOL_SETS["two"]
    for name in ("get_weather", "place_order"):
        for options in _configs():
            choice = {"type": "function", "function": {"name": name}}
            result = models[family].chat(MESSAGES, tools=tools, tool_choice=choice, max_new_tokens=BUDGET, **options)
            _check_calls(result, tools)
            assert [call.name for call in result.tool_calls] == [name]


@pytest.mark.parametrize("family", ["phi3", "phi4"])
def test_one_call_without_parallel_tool_calls(models: dict[str, phi3.Model], family: str) -> None:
    for options in _configs():
        result = models[family].chat(
            MESSAGES,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
            max_new_tokens=BUDGET,
            **options,
        )
        _check_calls(result, [WEATHER])
        assert len(result.tool_calls) == 1


@pytest.mark.parametrize("family", ["phi3", "phi4"])
def test_none_never_calls(models: dict[str, phi3.Model], family: str) -> None:
    for options in _configs():
        result = models[family].chat(MESSAGES, tools=TOOL_SETS["two"], tool_choice="none", max_new_tokens=24, **options)
        assert result.tool_calls == ()
        assert result.finish_reason != "tool_calls"


@pytest.mark.parametrize("family", ["phi3", "phi4"])
def test_auto_answers_in_words_or_with_valid_calls(models: dict[str, phi3.Model], family: str) -> None:
    """Every outcome is checked, the cut ones too (random weights cut every answer here: the
    check used to skip them and so asserted nothing)."""
    tools, budget = TOOL_SETS["two"], 48
    for options in _configs():
        result = models[family].chat(MESSAGES, tools=tools, max_new_tokens=budget, **options)
        if result.tool_calls:
            _check_calls(result, tools)
            continue
        assert result.finish_reason in ("eos", "stop", "length"), result.finish_reason
        # words only, closed or cut: the JSON envelope (constrained) or the marker (native) never shows
        assert not result.text.lstrip().startswith(('{"response"', '{"tool_calls"')), result.text
        assert tool_calling.TOOL_CALL_START not in result.text, result.text
        if result.finish_reason == "length":  # cut by the budget, not by anything else
            assert len(result.token_ids) == budget, (len(result.token_ids), result.text)


def _marker_first_copy(model_dir: Path, prompt: str, dest: Path) -> Path:
    """A copy of tiny Phi-4-mini whose greedy answer to ``prompt`` starts with ``<|tool_call|>``.

    The embeddings are tied, so setting the marker's row to a multiple of the last hidden state
    gives the marker a logit of 40 there (random weights give every other token about 0): the
    model chooses to call, and phi3 must take over after the marker.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        marker = tokenizer.convert_tokens_to_ids(tool_calling.TOOL_CALL_START)
        model.get_input_embeddings().weight[marker] = hidden * (40.0 / float(hidden @ hidden))
        assert int(model(ids).logits[0, -1].argmax()) == marker
    model.save_pretrained(dest)
    for file in model_dir.iterdir():
        if file.is_file() and not (dest / file.name).exists():
            shutil.copy(file, dest / file.name)
    return dest


@pytest.fixture(scope="module")
def calling_phi4(models: dict[str, phi3.Model], tmp_path_factory: pytest.TempPathFactory) -> Any:
    source = Path(models["phi4"].artifact.path)
    prompt = models["phi4"].apply_chat_template(
        tool_calling.native_messages(check_messages(MESSAGES), tool_calling.check_request(TOOL_SETS["two"], "auto"))
    )
    path = _marker_first_copy(source, prompt, tmp_path_factory.mktemp("calling") / "phi4-calls")
    _register_reference()
    model = phi3.load(str(path), backend="reference", precision="fp32")
    yield model
    model.close()


def test_native_auto_call_is_parsed_into_tool_calls(calling_phi4: phi3.Model) -> None:
    """The model writes ``<|tool_call|>`` on its own; phi3 constrains what follows to valid calls."""
    tools = TOOL_SETS["two"]
    result = calling_phi4.chat(MESSAGES, tools=tools, max_new_tokens=PARALLEL_BUDGET)
    _check_calls(result, tools)
    assert result.text == ""
    stream = calling_phi4.chat_stream(MESSAGES, tools=tools, max_new_tokens=PARALLEL_BUDGET)
    assert "".join(stream) == ""
    _check_calls(stream.result, tools)
    assert stream.new_tokens == stream.result.new_tokens > 1
    # without tools on offer the same weights still write the marker, but no call is made of it
    plain = calling_phi4.chat(MESSAGES, tools=tools, tool_choice="none", max_new_tokens=4)
    assert plain.tool_calls == () and plain.text.startswith(tool_calling.TOOL_CALL_START)


def test_stream_yields_the_text_and_ends_with_the_calls(models: dict[str, phi3.Model]) -> None:
    for family in ("phi3", "phi4"):
        stream = models[family].chat_stream(
            MESSAGES, tools=[WEATHER], tool_choice="required", max_new_tokens=PARALLEL_BUDGET
        )
        assert "".join(stream) == stream.result.text == ""
        _check_calls(stream.result, [WEATHER])
        plain = models[family].chat_stream(MESSAGES, tools=[WEATHER], max_new_tokens=12, ignore_eos=True)
        pieces = list(plain)
        assert "".join(pieces) == plain.result.text


ROUND_TRIP = [
    *MESSAGES,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": "18 degrees and sunny"},
]


@pytest.mark.parametrize("family", ["phi3", "phi4"])
def test_round_trip_with_a_tool_result(models: dict[str, phi3.Model], family: str) -> None:
    model = models[family]
    request = tool_calling.check_request([WEATHER], "auto")
    checked = check_messages(ROUND_TRIP)
    native = family == "phi4"
    rendered = (tool_calling.native_messages if native else tool_calling.generic_messages)(checked, request)
    prompt = model.apply_chat_template(rendered)
    assert "18 degrees and sunny" in prompt and '"city": "Paris"' in prompt
    if native:
        assert '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|/tool_call|>' in prompt
        assert "<|tool|>18 degrees and sunny<|end|>" in prompt
    else:
        assert '"tool_response": {"tool_call_id": "call_abc", "name": "get_weather"' in prompt
    # the next turn: an answer in words (none), another call (required), and the history alone
    answer = model.chat(ROUND_TRIP, tools=[WEATHER], tool_choice="none", max_new_tokens=8)
    assert answer.tool_calls == () and answer.new_tokens > 0
    again = model.chat(ROUND_TRIP, tools=[WEATHER], tool_choice="required", max_new_tokens=PARALLEL_BUDGET)
    _check_calls(again, [WEATHER])
    assert model.chat(ROUND_TRIP, max_new_tokens=4).tool_calls == ()


BAD_TOOLS = [
    ("not a list", "tools must be a list"),
    ([], "tools is an empty list"),
    ([{"type": "retrieval"}], "tools[0]: type must be 'function'"),
    ([{"type": "function"}], "tools[0]: 'function' must be a mapping"),
    ([{"type": "function", "function": {"name": "has space"}}], "tools[0] (has space): function.name must be"),
    ([WEATHER, WEATHER], "tools[1] (get_weather): function.name 'get_weather' is defined twice"),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "tools[0] (f): function.description"),
    (
        [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "x"}}}],
        "tools[0] (f): function.parameters: is not a valid JSON Schema",
    ),
    (
        [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
        "tools[0] (f): function.parameters must describe the arguments object",
    ),
    ([{"type": "function", "function": {"name": "f", "strict": "yes"}}], "tools[0] (f): function.strict"),
]


@pytest.mark.parametrize(("tools", "message"), BAD_TOOLS, ids=[m for _, m in BAD_TOOLS])
def test_bad_tool_definitions_are_refused(models: dict[str, phi3.Model], tools: Any, message: str) -> None:
    with pytest.raises(phi3.ConfigError, match=None) as caught:
        models["phi3"].chat(MESSAGES, tools=tools, max_new_tokens=4)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("sometimes", "tool_choice 'sometimes' is not a choice"),
        ({"type": "function", "function": {"name": "nope"}}, "names function 'nope', which is not in tools"),
        ({"type": "function"}, "is not a choice"),
    ],
)
def test_bad_tool_choice_is_refused(models: dict[str, phi3.Model], choice: Any, message: str) -> None:
    with pytest.raises(phi3.ConfigError) as caught:
        models["phi3"].chat(MESSAGES, tools=[WEATHER], tool_choice=choice, max_new_tokens=4)
    assert message in str(caught.value)
    with pytest.raises(phi3.ConfigError, match="needs tools"):
        models["phi3"].chat(MESSAGES, tool_choice="required", max_new_tokens=4)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "tool", "content": "x"}], "needs the 'tool_call_id'"),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "arguments must be a JSON object",
        ),
        ([{"role": "robot", "content": "x"}], "use system, user, assistant or tool"),
    ],
)
def test_bad_tool_turns_are_refused(models: dict[str, phi3.Model], messages: Any, message: str) -> None:
    with pytest.raises(phi3.ConfigError, match=message):
        models["phi3"].chat(messages, tools=[WEATHER], max_new_tokens=4)


def test_tools_need_json_schema_enforcement_and_exclude_other_constraints(models: dict[str, phi3.Model]) -> None:
    model = models["phi3"]
    with pytest.raises(phi3.ConfigError, match="tools cannot be combined with json_object"):
        model.chat(MESSAGES, tools=[WEATHER], json_object=True, max_new_tokens=4)
    # a session that enforces no structured output (SessionHandle.structured_output narrows it)
    narrowed = phi3.Model(
        model._registry, dataclasses.replace(model.session, structured_output=()), model.artifact, model.selection
    )
    with pytest.raises(phi3.UnsupportedError, match="cannot enforce json_schema output, which tool calling needs"):
        narrowed.chat(MESSAGES, tools=[WEATHER], max_new_tokens=4)
    assert narrowed.chat(MESSAGES, tools=[WEATHER], tool_choice="none", max_new_tokens=2).tool_calls == ()


def test_calls_render_as_the_model_wrote_them() -> None:
    request = tool_calling.check_request([WEATHER, NOW], {"type": "function", "function": {"name": "current_time"}})
    schema = request.calls_schema()
    assert schema["maxItems"] == 1 and schema["items"]["properties"]["name"] == {"const": "current_time"}
    assert request.generic_schema()["required"] == ["tool_calls"]
    listed = json.loads(tool_calling.native_messages([{"role": "user", "content": "hi"}], request)[0]["tools"])
    assert [tool["name"] for tool in listed] == ["get_weather", "current_time"]
    assert listed[1]["parameters"] == {"type": "object", "properties": {}, "additionalProperties": False}
