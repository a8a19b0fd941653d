"""The client libraries apps are written with, against ``phi3 serve smoke`` with no backend flags.

The default path here is phi3-openvino's genai engine (the card says so); phi3-dml, which declares
tools too, runs every test again. Each library is used as its
documentation shows, not through phi3-specific settings: langchain-openai (invoke, stream, named
messages, ``bind_tools`` + ``ToolMessage`` round trip, ``with_structured_output`` by json_schema and by
function calling), a named langgraph prebuilt ReAct agent over two turns, and litellm (sync, async,
stream, json_object). The smoke model has random weights: its words are gibberish, but everything a
constraint shapes (tool calls, JSON) must validate, on a budget a real answer fits.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import httpx
import pytest

from .harness import ServerProcess

pytest.importorskip("openvino_genai", reason="the default engine here is phi3-openvino's genai (nox -s server)")
langchain_openai = pytest.importorskip("langchain_openai", reason="the real-client tests run in nox -s server")
litellm = pytest.importorskip("litellm", reason="the real-client tests run in nox -s server")
jsonschema = pytest.importorskip("jsonschema")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

BUDGET = 400
"""Tokens for a constrained answer: a tool call of small integers takes ~60 in the smoke tokenizer."""


@tool
def add(a: int = Field(ge=0, le=9), b: int = Field(ge=0, le=9)) -> int:
    """Add two small integers."""
    return a + b


class Mood(BaseModel):
    """How the assistant feels, on a small scale."""

    mood: Literal["happy", "sad", "calm"]
    score: int = Field(ge=1, le=5)


SERVED = {"default": [], "dml": ["-b", "dml"]}
"""The default path (no backend flags) and every other plugin in this session that declares tools."""
EXPECTED = {"default": ("openvino", "genai"), "dml": ("dml", "genai")}


@pytest.fixture(scope="module", params=list(SERVED))
def server(request: pytest.FixtureRequest, start_server: Any) -> ServerProcess:
    started: ServerProcess = start_server(["smoke", "--preload", *SERVED[request.param]])
    (card,) = httpx.get(f"{started.url}/health", timeout=30).json()["loaded"]
    assert (card["backend"], card["engine"]) == EXPECTED[request.param]
    return started


def chat(server: ServerProcess, **options: Any) -> Any:
    settings: dict[str, Any] = {"temperature": 0, "max_tokens": 16, "max_retries": 0, "timeout": 120}
    return langchain_openai.ChatOpenAI(model="smoke", base_url=server.base_url, api_key="unused", **settings | options)


def test_langchain_invoke_stream_and_named_messages(server: ServerProcess) -> None:
    llm = chat(server)
    messages = [
        SystemMessage("Be brief.", name="rules"),
        HumanMessage("Tell me about AI PCs.", name="alice"),
        AIMessage("They have NPUs.", name="researcher"),
        HumanMessage("More?", name="alice"),
    ]
    answer = llm.invoke(messages)
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] >= 1
    streamed = "".join(str(piece.content) for piece in llm.stream(messages))
    assert streamed == answer.content  # greedy: the same answer either way


def test_langchain_bind_tools_and_tool_message_round_trip(server: ServerProcess) -> None:
    llm = chat(server, max_tokens=BUDGET)
    forced = llm.bind_tools([add], tool_choice="add", strict=True)
    question = HumanMessage("What is 2 + 3?")
    called = forced.invoke([question])
    assert [call["name"] for call in called.tool_calls] == ["add"]
    arguments = called.tool_calls[0]["args"]
    jsonschema.validate(arguments, add.tool_call_schema.model_json_schema())
    result = add.invoke(called.tool_calls[0])
    assert isinstance(result, ToolMessage) and result.content == str(arguments["a"] + arguments["b"])
    answer = llm.bind_tools([add], tool_choice="none").invoke([question, called, result])
    assert isinstance(answer.content, str) and answer.content and not answer.tool_calls


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(server: ServerProcess, method: str) -> None:
    structured = chat(server, max_tokens=BUDGET).with_structured_output(Mood, method=method, strict=True)
    answer = structured.invoke("How are you today?")
    assert isinstance(answer, Mood)  # pydantic validated it: a mood from the list, a score in 1..5


def test_a_named_langgraph_react_agent_over_two_turns(server: ServerProcess) -> None:
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(chat(server), [add], name="calculator")
    first = agent.invoke({"messages": [HumanMessage("What is 2 + 3?")]})
    reply = first["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.name == "calculator"
    # the second call sends the named AIMessage back (messages[].name): multi-agent graphs do this
    second = agent.invoke({"messages": [*first["messages"], HumanMessage("And 4 + 4?")]})
    assert isinstance(second["messages"][-1], AIMessage) and len(second["messages"]) > len(first["messages"])


def test_litellm_sync_async_stream_and_json_object(server: ServerProcess) -> None:
    common: dict[str, Any] = {
        "model": "openai/smoke",
        "api_base": server.base_url,
        "api_key": "unused",
        "messages": [{"role": "user", "content": "Tell me about AI PCs."}],
        "temperature": 0,
        "max_tokens": 12,
    }
    whole = litellm.completion(**common)
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens >= 1
    pieces = [chunk.choices[0].delta.content or "" for chunk in litellm.completion(**common, stream=True)]
    assert "".join(pieces) == text
    assert asyncio.run(litellm.acompletion(**common)).choices[0].message.content == text
    as_json = litellm.completion(**(common | {"max_tokens": BUDGET}), response_format={"type": "json_object"})
    assert as_json.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(as_json.choices[0].message.content), dict)
