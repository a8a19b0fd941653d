"""phi3-dml (ONNX Runtime GenAI, its CPU provider here) behind the server, with the openai client."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from .harness import ServerProcess

pytest.importorskip("onnxruntime_genai", reason="needs phi3-dml installed (nox -s server)")

MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    return start_server(["smoke", "-b", "dml", "-p", "int4", "--preload"])  # type: ignore[no-any-return]


def test_chat_stream_and_usage_on_dml(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
    answer = client.chat.completions.create(model="smoke", temperature=0, messages=MESSAGES, max_tokens=6)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model="smoke",
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer.choices[0].message.content == streamed  # greedy: the same answer either way
    usage = chunks[-1].usage
    assert usage is not None and answer.usage is not None
    assert usage.completion_tokens == answer.usage.completion_tokens <= 6
    assert usage.prompt_tokens == answer.usage.prompt_tokens > 0
    card = client.models.list().data[0].model_dump()
    assert (card["backend"], card["device"]) == ("dml", "cpu")


def test_completions_and_a_parameter_dml_cannot_honour(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
    done = client.completions.create(model="smoke", temperature=0, prompt="The capital of France is", max_tokens=4)
    assert done.choices[0].finish_reason in ("length", "stop") and done.usage is not None
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smoke", temperature=0, messages=MESSAGES, n=2)  # type: ignore[arg-type]
    assert "n" in str(info.value)
