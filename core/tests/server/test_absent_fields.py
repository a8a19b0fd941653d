"""Optional response fields OpenAI leaves out are left out, not sent as ``null``.

The schemas drop them with ``Field(exclude_if=...)``, which pydantic has from 2.12 on; older pydantic
takes the unknown keyword silently and every answer carries ``"tool_calls": null`` (clients that test
for the key see a tool call). The ``lowest`` nox session runs this on the lowest pydantic core allows.
"""

from __future__ import annotations

import json

import pytest

schemas = pytest.importorskip("phi3.server.schemas", reason="needs phi3-core[serve]")


def test_an_answer_without_calls_has_no_tool_calls_key() -> None:
    message = schemas.ResponseMessage(content="Hi!")
    assert message.model_dump() == {"role": "assistant", "content": "Hi!"}
    assert "tool_calls" not in json.loads(message.model_dump_json())


def test_a_streamed_piece_without_calls_has_no_tool_calls_key() -> None:
    assert json.loads(schemas.Delta(content="Hi").model_dump_json()) == {"role": None, "content": "Hi"}


def test_a_streamed_call_sends_id_type_and_name_only_in_its_first_piece() -> None:
    later = schemas.ToolCallDelta(index=0, function=schemas.FunctionDelta(arguments='{"city": "Oslo"}'))
    assert json.loads(later.model_dump_json()) == {"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}
    first = schemas.ToolCallDelta(
        index=0, id="call_1", type="function", function=schemas.FunctionDelta(name="get_weather", arguments="")
    )
    assert json.loads(first.model_dump_json()) == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }


def test_a_model_card_off_ray_has_no_replicas_key() -> None:
    card = schemas.ModelCard(id="smoke", created=0)
    assert "replicas" not in card.model_dump()
