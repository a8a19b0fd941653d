"""``tools`` / ``tool_choice`` on ``phi3 serve`` with the official openai client (reference backend).

Two tiny models behind one server: Phi-4-mini (native tool format: its own template and tokens)
and a Phi-3 layout with a 2048-token context (phi3's constrained JSON format; the tool description
is long in the tiny tokenizer). Random weights never call a tool on their own: every call that
validates was shaped by the constraint the server asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from phi3.testing import structured
from phi3.testing.tiny_model import make_tiny_phi3

from .harness import ServerProcess

pytest.importorskip("llguidance", reason="tool calling on the reference backend needs phi3-core[structured]")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = structured.WEATHER_TOOL
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": -9, "maximum": 9},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
BUDGET = 400


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tool-server-models")
    return {
        "phi4": str(make_tiny_phi3(root / "phi4", variant="phi4-mini")),
        "phi3": str(make_tiny_phi3(root / "phi3", max_position_embeddings=2048)),
    }


@pytest.fixture(scope="module")
def server(start_server: Any, models: dict[str, str]) -> ServerProcess:
    args = [models["phi4"], models["phi3"], "-b", "reference", "-p", "fp32", "--max-loaded", "2"]
    return start_server(args)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


def _valid(calls: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of each call, after checking it against its tool's parameters."""
    found = []
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, PARAMETERS[call.function.name])
        found.append((call.function.name, arguments))
    return found


@pytest.mark.parametrize("family", ["phi4", "phi3"])
def test_agent_round_trip(client: openai.OpenAI, models: dict[str, str], family: str) -> None:
    """Call -> the app runs the tool -> a tool message -> an answer in words, as agents do it."""
    model = models[family]
    messages: list[Any] = list(MESSAGES)
    first = client.chat.completions.create(
        model=model,
        temperature=0,
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,  # one call keeps it short; parallel calls are streamed below
        max_tokens=BUDGET,  # type: ignore[arg-type]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = _valid(choice.message.tool_calls)
    messages.append(choice.message)  # the client's own message object goes back as the history
    for call, (name, arguments) in zip(choice.message.tool_calls or [], calls, strict=True):
        result = f"{arguments.get('city', 'it')}: 18 degrees" if name == "get_weather" else "42"
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    answer = client.chat.completions.create(
        model=model,
        temperature=0,
        messages=messages,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.choices[0].message.tool_calls is None
    assert isinstance(answer.choices[0].message.content, str) and answer.usage is not None
    assert answer.usage.completion_tokens > 0
    again = client.chat.completions.create(
        model=model,
        temperature=0,
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=BUDGET,  # type: ignore[arg-type]
    )
    assert [name for name, _ in _valid(again.choices[0].message.tool_calls)] == ["add"]


@pytest.mark.parametrize("family", ["phi4", "phi3"])
def test_streamed_calls_are_reassembled_by_the_client(
    client: openai.OpenAI, models: dict[str, str], family: str
) -> None:
    model = models[family]  # one short tool: up to MAX_PARALLEL_CALLS calls of it, quickly
    whole = client.chat.completions.create(
        model=model,
        temperature=0,
        messages=MESSAGES,
        tools=[ADD],
        tool_choice="required",
        max_tokens=BUDGET,  # type: ignore[arg-type]
    )
    expected = _valid(whole.choices[0].message.tool_calls)
    # the client's stream helper joins the deltas by index into the final message
    with client.chat.completions.stream(
        model=model,
        temperature=0,
        messages=MESSAGES,
        tools=[ADD],
        tool_choice="required",
        max_tokens=BUDGET,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert _valid(final.choices[0].message.tool_calls) == expected  # greedy: the same calls
    # and the raw deltas have OpenAI's shape: index, id, type and name first, then the arguments
    chunks = list(
        client.chat.completions.create(
            model=model,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            tools=[ADD],  # type: ignore[arg-type]
            tool_choice="required",
            max_tokens=BUDGET,
            stream=True,
        )
    )
    deltas = [call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or []]
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"
    openings = [d for d in deltas if d.id is not None]
    assert [d.index for d in openings] == list(range(len(expected)))
    assert all(d.type == "function" and d.function and d.function.name for d in openings)
    joined = {d.index: "".join(x.function.arguments or "" for x in deltas if x.index == d.index) for d in openings}
    assert [(d.function.name, json.loads(joined[d.index])) for d in openings if d.function] == expected


def test_named_function_and_one_call(client: openai.OpenAI, models: dict[str, str]) -> None:
    for family in ("phi4", "phi3"):
        answer = client.chat.completions.create(
            model=models[family],
            messages=MESSAGES,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "add"}},
            temperature=1.0,
            seed=5,
            max_tokens=BUDGET,
        )
        assert [name for name, _ in _valid(answer.choices[0].message.tool_calls)] == ["add"]
        single = client.chat.completions.create(
            model=models[family],
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=BUDGET,
        )
        assert len(_valid(single.choices[0].message.tool_calls)) == 1


def test_auto_answers_in_words_or_calls(client: openai.OpenAI, models: dict[str, str]) -> None:
    for family in ("phi4", "phi3"):
        answer = client.chat.completions.create(
            model=models[family],
            temperature=0,
            messages=MESSAGES,
            tools=TOOLS,
            max_tokens=32,  # type: ignore[arg-type]
        )
        choice = answer.choices[0]
        if choice.finish_reason == "tool_calls":
            _valid(choice.message.tool_calls)
        else:
            assert choice.message.tool_calls is None and isinstance(choice.message.content, str)


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools",
            "tools[0] (f)",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools", "defined twice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}},
            "tool_choice",
            "'add'",
        ),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice", "not a choice"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "true or false"),
    ],
)
def test_bad_tool_requests_are_400_naming_the_parameter(
    client: openai.OpenAI, models: dict[str, str], extra: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=models["phi4"], temperature=0, messages=MESSAGES, max_tokens=2, extra_body=extra
        )  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param and words in body["message"], body


def test_malformed_tool_turns_are_400(server: ServerProcess, models: dict[str, str]) -> None:
    """Raw HTTP: a tool message without its call id, and a call whose arguments are not an object."""
    bad_turns = [
        [*MESSAGES, {"role": "tool", "content": "18 degrees"}],
        [
            *MESSAGES,
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": "[1, 2]"}}],
            },
        ],
    ]
    for messages in bad_turns:
        reply = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": models["phi4"], "messages": messages, "tools": TOOLS, "max_tokens": 2},
            timeout=120,
        )
        assert reply.status_code == 400, reply.text
        assert "\n" not in reply.json()["error"]["message"]


def test_tool_definitions_stay_out_of_completions(client: openai.OpenAI, models: dict[str, str]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(
            model=models["phi4"], temperature=0, prompt="hi", max_tokens=2, extra_body={"tools": TOOLS}
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tools"


def test_served_models_have_their_own_formats(models: dict[str, str]) -> None:
    """What the two models above exercise: Phi-4-mini's template lists tools itself, Phi-3's does not."""
    template = json.loads((Path(models["phi4"]) / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|tool|>" in template
    template = json.loads((Path(models["phi3"]) / "tokenizer_config.json").read_text())["chat_template"]
    assert "tool" not in template


def test_a_backend_without_json_schema_refuses_tools_naming_them(declaring_server: Any) -> None:
    base_url, plugin = declaring_server
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="smoke",
                temperature=0,
                messages=MESSAGES,  # type: ignore[arg-type]
                tools=[WEATHER],  # type: ignore[arg-type]
                max_tokens=4,
                stream=stream,
            )
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == "tools" and body["code"] == "unsupported_parameter"
        assert "cannot enforce json_schema output, which tool calling needs" in body["message"]
    assert plugin.generate_calls == 0
    words = client.chat.completions.create(
        model="smoke",
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[arg-type]
        tool_choice="none",
        max_tokens=3,
    )
    assert words.choices[0].message.tool_calls is None and plugin.generate_calls == 1
