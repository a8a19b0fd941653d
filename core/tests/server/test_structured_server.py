"""``response_format`` on ``phi3 serve`` with the official openai client, on the reference backend.

The tiny smoke model has random weights: left alone it never writes JSON, so every answer that
validates here was shaped by the grammar the server passed down. A backend that cannot enforce the
format asked for is a 400 naming ``response_format`` before any decoding (checked in-process on a
real uvicorn server with a backend that declares nothing).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

import phi3
from phi3.testing import reference_backend, structured

from .harness import ServerProcess

pytest.importorskip("llguidance", reason="structured output on the reference backend needs phi3-core[structured]")
jsonschema = pytest.importorskip("jsonschema")

MODEL = "smoke"
MESSAGES = [{"role": "user", "content": "Fill in the form."}]


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    return start_server([MODEL, "-b", "reference", "-p", "fp32"])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


def _json_schema(name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": structured.SCHEMAS[name], "strict": True}}


@pytest.mark.parametrize("name", sorted(structured.SCHEMAS))
def test_json_schema_answers_validate(client: openai.OpenAI, name: str) -> None:
    for seed in (None, 11, 12):
        sampling: dict[str, Any] = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
        answer = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=160,
            response_format=_json_schema(name),  # type: ignore[arg-type]
            **sampling,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), structured.SCHEMAS[name])


def test_json_schema_streams_valid_json_and_equals_the_in_process_answer(client: openai.OpenAI) -> None:
    schema = structured.SCHEMAS["nested_with_array"]
    stream = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=160,
        response_format=_json_schema("nested_with_array"),  # type: ignore[arg-type]
        stream=True,
    )
    pieces, finishes = [], []
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
    text = "".join(pieces)
    assert finishes[-1] == "stop" and len([p for p in pieces if p]) > 3  # streamed in pieces, not one blob
    jsonschema.validate(json.loads(text), schema)
    phi3.plugins.reset_registry()
    registry = phi3.plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    with phi3.load(MODEL, backend="reference", precision="fp32") as local:
        assert text == local.chat(MESSAGES, max_new_tokens=160, json_schema=schema).text


def test_json_object_answers_are_objects(client: openai.OpenAI) -> None:
    closed = []
    for seed in (1, 2, 3, 4):
        answer = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=120,
            temperature=1.0,
            seed=seed,
            response_format={"type": "json_object"},
        )
        text = answer.choices[0].message.content or ""
        assert text.startswith("{"), text
        if answer.choices[0].finish_reason == "stop":  # "any object" is unbounded: one that closed parses
            closed.append(json.loads(text))
    assert closed and all(isinstance(value, dict) for value in closed)


class Ticket(BaseModel):
    status: Literal["open", "closed", "pending"]
    code: str = Field(pattern=r"^[A-Z]{2}-[0-9]{3}$")
    priority: int = Field(ge=1, le=5)


def test_pydantic_parse_round_trip(client: openai.OpenAI) -> None:
    """openai 3.x's ``chat.completions.parse`` (``beta.`` in 1.x): the schema comes from a pydantic
    model, and the answer comes back as an instance of it."""
    for seed in (None, 5):
        sampling: dict[str, Any] = {} if seed is None else {"temperature": 1.0, "seed": seed}
        completion = client.chat.completions.parse(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=120,
            response_format=Ticket,
            **sampling,
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, Ticket), completion.choices[0].message.content
        assert re.fullmatch(r"[A-Z]{2}-[0-9]{3}", parsed.code) and 1 <= parsed.priority <= 5


def test_regex_extension_and_completions_endpoint(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=40,
        extra_body={"response_format": {"type": "regex", "regex": structured.REGEX}},
    )
    assert re.fullmatch(structured.REGEX, answer.choices[0].message.content or "")
    completion = client.completions.create(
        model=MODEL,
        temperature=0,
        prompt="Order:",
        max_tokens=160,
        extra_body={"response_format": _json_schema("flat_required")},
    )
    jsonschema.validate(json.loads(completion.choices[0].text), structured.SCHEMAS["flat_required"])


def test_text_format_is_plain_text(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=6)  # type: ignore[arg-type]
    text = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=6,
        response_format={"type": "text"},
    )
    assert text.choices[0].message.content == plain.choices[0].message.content


@pytest.mark.parametrize(
    ("response_format", "param", "fragment"),
    [
        ({"type": "xml"}, "response_format", "does not match any of the expected tags"),
        ({"type": "json_schema"}, "response_format.json_schema", "missing required parameter"),
        ({"type": "json_schema", "json_schema": {"name": "a"}}, "response_format.json_schema.schema", "missing"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "response_format.json_schema.name", ""),
        ({"type": "json_object", "schema": {}}, "response_format.schema", "unrecognized request argument"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "objekt"}}}, "response_format", ""),
        ({"type": "regex", "regex": "(?=a)a"}, "response_format", "lookaround"),
        ("json", "response_format", ""),
    ],
)
def test_malformed_response_formats_are_400_naming_the_part(
    server: ServerProcess, response_format: Any, param: str, fragment: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "response_format": response_format}
    answer = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and fragment in error["message"], error
    assert "\n" not in error["message"]


def test_a_schema_the_grammar_engine_cannot_enforce_is_a_400_not_a_500(server: ServerProcess) -> None:
    schema = {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}  # valid JSON Schema
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "cond", "schema": schema}},
    }
    for stream in (False, True):
        answer = httpx.post(f"{server.base_url}/chat/completions", json={**body, "stream": stream}, timeout=120)
        assert answer.status_code == 400, answer.text
        assert "cannot be enforced" in answer.json()["error"]["message"]


# -- a backend that enforces nothing: refused before a slot is taken or a token decoded ------------


def test_a_backend_that_cannot_enforce_it_answers_400_naming_response_format(
    declaring_server: tuple[str, Any],
) -> None:
    base_url, plugin = declaring_server
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    for response_format in (_json_schema("flat_required"), {"type": "json_object"}):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model=MODEL,
                    temperature=0,
                    messages=MESSAGES,  # type: ignore[arg-type]
                    max_tokens=4,
                    response_format=response_format,  # type: ignore[arg-type]
                    stream=stream,
                )
            body = caught.value.body
            assert isinstance(body, dict) and body["param"] == "response_format", body
            assert body["code"] == "unsupported_parameter"
            assert f"cannot enforce {response_format['type']} output" in body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.parse(model=MODEL, messages=MESSAGES, max_tokens=4, response_format=Ticket)  # type: ignore[arg-type]
    assert plugin.generate_calls == 0
    plain = client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
    assert plain.choices[0].message.content is not None and plugin.generate_calls == 1
