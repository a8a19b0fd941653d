"""The Responses API on ``phi3 serve``: the official openai client's ``client.responses`` against a real server.

A tiny random Phi-3 (2048-token context: the tool description is long in the tiny tokenizer) on the
reference backend, behind an API key. Answers are checked by parsing the server's raw JSON with the
SDK's own typed models (``openai.types.responses``), so a missing or mistyped field fails here;
answers are compared at ``temperature: 0`` (the server samples by default, as OpenAI does). Random
weights call tools only when forced (``tool_choice``), and every call that validates was shaped by
the constraint. The WebSocket mode is driven by the SDK's ``client.responses.connect()`` and by the
``websockets`` client for what the SDK cannot send (no key, a foreign origin).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from phi3.testing.tiny_model import make_tiny_phi3

from .harness import API_KEY, ServerProcess

pytest.importorskip("llguidance", reason="tools and text.format on the reference backend need phi3-core[structured]")
jsonschema = pytest.importorskip("jsonschema")
websockets_sync = pytest.importorskip("websockets.sync.client", reason="the WebSocket mode needs websockets")

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two integers.",
    "parameters": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 99},
            "b": {"type": "integer", "minimum": -9, "maximum": 9},
        },
        "required": ["a", "b"],
        "additionalProperties": False,
    },
}
DIGIT = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["n"],
    "additionalProperties": False,
}
BUDGET = 400
REQUIRED_FIELDS = (
    "id",
    "object",
    "created_at",
    "status",
    "background",
    "completed_at",
    "error",
    "incomplete_details",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "model",
    "output",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "service_tier",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "usage",
    "user",
)
"""Fields every response object carries (``null`` where the spec allows it)."""
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_phi3(tmp_path_factory.mktemp("responses") / "tiny", max_position_embeddings=2048))


@pytest.fixture(scope="module")
def server(start_server: Any, model_dir: str) -> ServerProcess:
    return start_server([model_dir, "-b", "reference", "-p", "fp32"], api_key=API_KEY)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)


def _raw(server: ServerProcess, **body: Any) -> dict[str, Any]:
    """The response object as the server sent it (JSON), checked against the SDK's model."""
    answer = server.post("/v1/responses", json=body)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    Response.model_validate(data)  # validating, not the SDK's lenient construct
    return data


def _check_object(data: dict[str, Any]) -> None:
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    assert not missing, f"missing fields {missing}"
    assert data["object"] == "response" and data["id"].startswith("resp_")
    assert isinstance(data["created_at"], int)
    assert data["completed_at"] is None or isinstance(data["completed_at"], int)


def test_plain_answer_is_a_complete_response_object(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    data = _raw(
        server,
        model=model_dir,
        input="Tell me about AI PCs.",
        instructions="Be brief.",
        temperature=0,
        max_output_tokens=8,
    )
    _check_object(data)
    assert data["status"] in ("completed", "incomplete") and isinstance(data["completed_at"], int)
    assert data["instructions"] == "Be brief." and data["max_output_tokens"] == 8 and data["temperature"] == 0
    assert data["tools"] == [] and data["tool_choice"] == "auto" and data["text"]["format"] == {"type": "text"}
    [message] = data["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["id"].startswith("msg_")
    assert message["status"] in ("completed", "incomplete")
    [part] = message["content"]
    assert part["type"] == "output_text" and part["annotations"] == [] and isinstance(part["text"], str)
    usage = data["usage"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] and usage["output_tokens"] > 0
    if usage["output_tokens"] == 8:
        assert data["status"] == "incomplete" and data["incomplete_details"] == {"reason": "max_output_tokens"}
    # the SDK's own call, same greedy answer
    answer = client.responses.create(
        model=model_dir, input="Tell me about AI PCs.", instructions="Be brief.", temperature=0, max_output_tokens=8
    )
    assert answer.output_text == part["text"]
    # item input, the same conversation
    items = client.responses.create(
        model=model_dir,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Tell me about AI PCs."}]},
        ],
        temperature=0,
        max_output_tokens=8,
    )
    assert items.output_text == part["text"]


def test_stream_events_in_order_with_full_response_objects(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    fields: dict[str, Any] = dict(model=model_dir, input="Tell me about AI PCs.", temperature=0, max_output_tokens=12)
    plain = client.responses.create(**fields)
    events = list(client.responses.create(**fields, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 1
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete" if plain.status == "incomplete" else "response.completed",
    ]
    created, in_progress, final = events[0], events[1], events[-1]
    for event in (created, in_progress):
        assert event.response.status == "in_progress" and event.response.output == []  # type: ignore[union-attr]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == plain.output_text == final.response.output_text  # type: ignore[union-attr]
    assert final.response.id == created.response.id  # type: ignore[union-attr]
    assert final.response.usage is not None and final.response.usage.output_tokens > 0  # type: ignore[union-attr]
    # on the wire: "\n" line ends, one event: and one data: line per event, each a full JSON object
    with httpx.stream(
        "POST", f"{server.base_url}/responses", json={**fields, "stream": True}, headers=server.headers, timeout=120
    ) as raw:
        body = b"".join(raw.iter_bytes())
    assert b"\r" not in body
    blocks = [block for block in body.decode().split("\n\n") if block]
    # (pieces decoded while the client was busy are joined: the number of deltas may differ per run)
    for number, block in enumerate(blocks):
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}" and data["sequence_number"] == number
        if data["type"] in ("response.created", "response.in_progress", "response.completed", "response.incomplete"):
            _check_object(data["response"])
            Response.model_validate(data["response"])


def _call(output: list[Any]) -> Any:
    [call] = [item for item in output if item.type == "function_call"]
    assert call.id.startswith("fc_") and call.call_id.startswith("call_") and call.status == "completed"
    assert call.name == "add" and isinstance(call.arguments, str)
    jsonschema.validate(json.loads(call.arguments), ADD["parameters"])
    return call


def test_forced_function_call_and_its_output_round_trip(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    first = client.responses.create(
        model=model_dir,
        input="What is 2 + 3?",
        tools=[ADD],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "add"},
        parallel_tool_calls=False,
        max_output_tokens=BUDGET,
        temperature=0,
    )
    assert first.status == "completed"
    call = _call(first.output)
    [tool] = first.tools
    assert tool.type == "function" and tool.name == "add" and tool.strict is True  # type: ignore[union-attr]
    assert first.tool_choice.type == "function" and first.parallel_tool_calls is False  # type: ignore[union-attr]
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "5"}
    followed = client.responses.create(
        model=model_dir,
        previous_response_id=first.id,
        input=[result],  # type: ignore[list-item]
        tools=[ADD],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=8,
        temperature=0,
    )
    assert followed.previous_response_id == first.id
    assert [item.type for item in followed.output] == ["message"] and followed.output_text
    # stateless: the client sends the whole conversation, its own output items included
    history = [{"role": "user", "content": "What is 2 + 3?"}, *[i.model_dump(exclude_none=True) for i in first.output]]
    resent = client.responses.create(
        model=model_dir,
        input=[*history, result],  # type: ignore[list-item]
        tools=[ADD],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=8,
        temperature=0,
    )
    assert resent.output_text == followed.output_text
    assert resent.usage is not None and followed.usage is not None
    assert resent.usage.input_tokens == followed.usage.input_tokens
    # streamed: the call as output_item.added, arguments delta and done, output_item.done
    events = list(
        client.responses.create(
            model=model_dir,
            input="What is 2 + 3?",
            tools=[ADD],  # type: ignore[list-item]
            tool_choice="required",
            parallel_tool_calls=False,
            max_output_tokens=BUDGET,
            temperature=0,
            stream=True,
        )
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert types[2:-1] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = events[-2].item  # type: ignore[union-attr]
    assert events[-3].arguments == done.arguments and events[2].item.arguments == ""  # type: ignore[union-attr]
    assert _call(events[-1].response.output).arguments == done.arguments  # type: ignore[union-attr]


def test_text_format_json_schema(client: openai.OpenAI, model_dir: str) -> None:
    answer = client.responses.create(
        model=model_dir,
        input="Pick a digit.",
        text={"format": {"type": "json_schema", "name": "digit", "schema": DIGIT, "strict": True}},
        max_output_tokens=BUDGET,
        temperature=0,
    )
    assert answer.status == "completed"
    jsonschema.validate(json.loads(answer.output_text), DIGIT)
    assert answer.text is not None and answer.text.format.type == "json_schema"  # type: ignore[union-attr]
    assert answer.text.format.schema_ == DIGIT  # type: ignore[union-attr]


def test_previous_response_id_continues_and_unknown_ids_are_not_found(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    first = client.responses.create(
        model=model_dir, input="Hello.", instructions="Be brief.", max_output_tokens=6, temperature=0
    )
    second = client.responses.create(
        model=model_dir, input="And then?", previous_response_id=first.id, max_output_tokens=6, temperature=0
    )
    # what a client without previous_response_id sends: the conversation so far (instructions are not carried)
    resent = client.responses.create(
        model=model_dir,
        input=[
            {"role": "user", "content": "Hello."},
            *[i.model_dump(exclude_none=True) for i in first.output],
            {"role": "user", "content": "And then?"},
        ],  # type: ignore[list-item]
        max_output_tokens=6,
        temperature=0,
    )
    assert second.output_text == resent.output_text
    assert second.usage is not None and resent.usage is not None
    assert second.usage.input_tokens == resent.usage.input_tokens
    assert client.responses.retrieve(second.id).output_text == second.output_text
    for unknown in (
        "resp_never_made",
        client.responses.create(model=model_dir, input="x", store=False, max_output_tokens=2).id,
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=model_dir, input="x", previous_response_id=unknown, max_output_tokens=2)
        body: Any = caught.value.body
        assert caught.value.code == "previous_response_not_found" and body["param"] == "previous_response_id"
    # assistant items with phase are accepted
    phased = {
        "type": "message",
        "role": "assistant",
        "phase": "final_answer",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
    }
    assert _raw(
        server,
        model=model_dir,
        input=[{"role": "user", "content": "Hello."}, phased, {"role": "user", "content": "More?"}],
        max_output_tokens=2,
    )


def test_an_image_part_is_a_clear_400(server: ServerProcess, client: openai.OpenAI, model_dir: str) -> None:
    image = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=model_dir,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "What is this?"}, image]}],  # type: ignore[list-item]
        )
    assert "input[0].content[1]: input_image parts are not supported" in caught.value.message
    assert "text only" in caught.value.message
    for field, value in (("truncation", "auto"), ("background", True), ("reasoning", {"effort": "high"})):
        refused = server.post("/v1/responses", json={"model": model_dir, "input": "x", field: value})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == field, refused.text
    unknown = server.post("/v1/responses", json={"model": model_dir, "input": "x", "frobnicate": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_parameter"
    too_long = server.post("/v1/responses", json={"model": model_dir, "input": "word " * 5000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "input", too_long.text


def test_compact_keeps_user_messages_and_a_compaction_item(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    first = client.responses.create(model=model_dir, input="My name is Ada.", max_output_tokens=6, temperature=0)
    compacted = server.post(
        "/v1/responses/compact",
        json={
            "model": model_dir,
            "previous_response_id": first.id,
            "input": [{"role": "user", "content": "Remember it."}],
        },
    )
    assert compacted.status_code == 200, compacted.text
    data = compacted.json()
    assert data["object"] == "response.compaction" and isinstance(data["created_at"], int)
    assert data["usage"]["output_tokens"] > 0
    *kept, item = data["output"]
    assert [m["content"][0]["text"] for m in kept] == ["My name is Ada.", "Remember it."]
    assert all(m["role"] == "user" and m["type"] == "message" for m in kept)
    assert item["type"] == "compaction" and item["encrypted_content"] and item["id"]
    # the compacted window is the next request's input
    answer = client.responses.create(
        model=model_dir,
        input=[*data["output"], {"role": "user", "content": "What is my name?"}],
        max_output_tokens=4,
        temperature=0,
    )
    assert answer.status in ("completed", "incomplete")
    # the SDK's own call parses it
    assert client.responses.compact(model=model_dir, input="Hello.").object == "response.compaction"
    forged = dict(item, encrypted_content="not-ours")
    refused = server.post("/v1/responses", json={"model": model_dir, "input": [forged]})
    assert refused.status_code == 400 and "compaction" in refused.json()["error"]["message"]


def _turn(connection: Any, **fields: Any) -> list[Any]:
    connection.response.create(**fields)
    events = []
    for _ in range(10_000):  # bounded: a turn is far fewer events
        event = connection.recv()
        events.append(event)
        if event.type in TERMINAL:
            return events
    raise AssertionError("no terminal event")


def test_websocket_mode_two_turns_on_one_connection(
    server: ServerProcess, client: openai.OpenAI, model_dir: str
) -> None:
    fields: dict[str, Any] = dict(model=model_dir, max_output_tokens=6, temperature=0)
    with client.responses.connect() as connection:
        first = _turn(connection, input="Hello.", store=False, **fields)
        assert [e.sequence_number for e in first] == list(range(len(first)))
        assert first[0].type == "response.created" and first[-1].type in ("response.completed", "response.incomplete")
        response_id = first[-1].response.id
        assert first[-1].response.store is False
        second = _turn(connection, input="And then?", previous_response_id=response_id, store=False, **fields)
        assert second[-1].type in ("response.completed", "response.incomplete"), second[-1]
        assert second[-1].response.previous_response_id == response_id
        unknown = _turn(connection, input="x", previous_response_id="resp_unknown", **fields)
        [error] = unknown
        assert error.type == "error" and error.status == 400
        assert error.error.code == "previous_response_not_found" and error.error.param == "previous_response_id"
        third = _turn(connection, input="Still there?", **fields)  # the connection survives an error
        assert third[-1].type in ("response.completed", "response.incomplete")
    # the same turns over HTTP give the same answers; store: false stayed on the connection
    over_http = client.responses.create(input="Hello.", **fields)
    assert over_http.output_text == first[-1].response.output_text
    with pytest.raises(openai.BadRequestError):
        client.responses.create(input="x", previous_response_id=response_id, **fields)
    # the handshake is guarded as HTTP requests are: the key, and the origin
    url = f"ws://127.0.0.1:{server.port}/v1/responses"
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as no_key:
        websockets_sync.connect(url, open_timeout=30)
    assert no_key.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as foreign:
        websockets_sync.connect(
            url,
            origin="https://evil.example",
            additional_headers=server.headers,  # type: ignore[arg-type]
            open_timeout=30,
        )
    assert foreign.value.response.status_code == 403
    with websockets_sync.connect(url, additional_headers=server.headers, open_timeout=30) as raw:
        raw.send(json.dumps({"type": "response.cancel"}))
        reply = json.loads(raw.recv(timeout=30))
        assert reply["type"] == "error" and reply["error"]["param"] == "type"


def test_a_forced_tool_on_the_default_engine(start_server: Any) -> None:
    """``phi3 serve smoke`` with no ``-b``: the default engine (phi3-openvino's genai) enforces the call's schema."""
    pytest.importorskip("openvino_genai", reason="the default engine is phi3-openvino's (nox -s server)")
    server: ServerProcess = start_server(["smoke", "--preload"], api_key=API_KEY)
    [card] = httpx.get(f"{server.url}/health", timeout=30).json()["loaded"]
    assert (card["backend"], card["engine"]) == ("openvino", "genai")
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)
    answer = client.responses.create(
        model="smoke",
        input="What is 2 + 3?",
        tools=[ADD],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=BUDGET,
        temperature=0,
    )
    assert answer.status == "completed"
    call = _call(answer.output)
    followed = client.responses.create(
        model="smoke",
        previous_response_id=answer.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "5"}],  # type: ignore[list-item]
        max_output_tokens=16,
        temperature=0,
    )
    assert followed.status in ("completed", "incomplete") and followed.output[0].type == "message"


def test_the_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    from phi3.server.responses_store import ResponseStore, StoredResponse

    def stored(name: str, text: str = "") -> StoredResponse:
        return StoredResponse.of({"id": name}, [{"role": "user", "content": text}])

    store = ResponseStore(max_entries=2, max_bytes=10_000)
    store.put(stored("a"))
    store.put(stored("b"))
    assert store.get("a") is not None  # a is now the most recently used
    store.put(stored("c"))
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    by_size = ResponseStore(max_entries=100, max_bytes=stored("x", "y" * 100).size * 2)
    for name in "pqr":
        by_size.put(stored(name, "y" * 100))
    assert len(by_size) == 2 and by_size.get("p") is None and by_size.bytes <= by_size.max_bytes
    assert not by_size.put(stored("huge", "y" * 10_000)) and by_size.get("huge") is None
