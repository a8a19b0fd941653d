"""The fields apps moving from OpenAI, llama.cpp, Ollama and vLLM send, and how answers end.

A real ``phi3 serve`` (reference backend, a tiny Phi-3 with a 512-token context so "up to the
context" is checkable) driven by the official openai client and raw httpx for what the client
cannot send (CORS preflight, raw SSE lines).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import openai
import pytest

from phi3.testing.tiny_model import make_tiny_phi3

from .conftest import in_process_server
from .harness import ServerProcess

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me about AI PCs."}]
CONTEXT = 512
ORIGIN = "http://localhost:5173"
STAINLESS_HEADERS = (
    "authorization,content-type,x-stainless-arch,x-stainless-async,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,"
    "x-stainless-timeout"
)
"""What the openai JS SDK's browser build asks a preflight to allow (openai-node 5.x)."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_phi3(tmp_path_factory.mktemp("fields") / "tiny", max_position_embeddings=CONTEXT))


@pytest.fixture(scope="module")
def server(start_server: Any, model_dir: str) -> ServerProcess:
    args = [model_dir, "-b", "reference", "-p", "fp32", "--cors-origin", ORIGIN]
    return start_server(args)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


def _text(client: openai.OpenAI, model: str, **fields: Any) -> str | None:
    extra = fields.pop("extra_body", None)
    answer = client.chat.completions.create(
        model=model,
        messages=fields.pop("messages", MESSAGES),
        max_tokens=fields.pop("max_tokens", 12),
        extra_body=extra,
        **fields,
    )
    return answer.choices[0].message.content


def test_named_messages_are_accepted_and_not_shown_to_phi3(client: openai.OpenAI, model_dir: str) -> None:
    """langchain sends ``name`` for named messages and agents; Phi-3's template has no place for it."""
    named = [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "user", "content": "Tell me about AI PCs.", "name": "alice"},
        {"role": "assistant", "content": "They have NPUs.", "name": "researcher"},
        {"role": "user", "content": "More?", "name": "alice"},
    ]
    plain = [{k: v for k, v in m.items() if k != "name"} for m in named]
    assert _text(client, model_dir, messages=named, temperature=0) == _text(
        client, model_dir, messages=plain, temperature=0
    )


def test_browser_preflight_with_the_js_sdk_headers(server: ServerProcess) -> None:
    response = httpx.options(
        f"{server.base_url}/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": STAINLESS_HEADERS,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(header in allowed for header in STAINLESS_HEADERS.split(",")), allowed


def test_models_are_listed_before_any_load_and_retrievable(server: ServerProcess, model_dir: str) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == [model_dir]
    assert client.models.retrieve(model_dir).id == model_dir
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert "GET /v1/models lists them" in str(raised.value)


def test_without_model_arguments_the_catalogue_is_listed(start_server: Any) -> None:
    server = start_server(["-b", "reference", "-p", "fp32"])
    ids = [m["id"] for m in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]]
    assert ids[:2] == ["smoke", "phi3-mini-4k"] and "phi4-mini" in ids
    assert httpx.get(f"{server.base_url}/models/phi3.5-mini", timeout=30).json()["id"] == "phi3.5-mini"
    assert httpx.get(f"{server.url}/health", timeout=30).json()["loaded"] == []  # listing loads nothing


def test_without_max_tokens_the_answer_may_fill_the_context(client: openai.OpenAI, model_dir: str) -> None:
    answer = client.chat.completions.create(
        model=model_dir,
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert answer.usage is not None
    assert answer.usage.prompt_tokens + answer.usage.completion_tokens == CONTEXT  # not phi3's API default of 256
    assert answer.choices[0].finish_reason == "length"


def test_absent_temperature_samples_as_openai_does(client: openai.OpenAI, model_dir: str) -> None:
    """No ``temperature``: the checkpoint's generation_config.json sets none, so OpenAI's default
    (sampling at 1.0) applies; with a seed it is reproducible, and equal to temperature 1 explicitly."""
    default = _text(client, model_dir, seed=5, max_tokens=16)
    assert default == _text(client, model_dir, seed=5, max_tokens=16, temperature=1.0)
    assert default != _text(client, model_dir, max_tokens=16, temperature=0), "the default must not be greedy"


def test_min_p_is_applied(client: openai.OpenAI, model_dir: str) -> None:
    """min_p 0.99 keeps only tokens almost as likely as the best one: at a high temperature the answer is
    the greedy one, while without min_p the same seed wanders off it."""
    greedy = _text(client, model_dir, temperature=0, max_tokens=16)
    assert _text(client, model_dir, temperature=1.5, seed=3, max_tokens=16, extra_body={"min_p": 0.99}) == greedy
    assert _text(client, model_dir, temperature=1.5, seed=3, max_tokens=16) != greedy


def test_repeat_penalty_is_repetition_penalty(client: openai.OpenAI, model_dir: str) -> None:
    fields = {"temperature": 0, "max_tokens": 64}
    llama = _text(client, model_dir, **fields, extra_body={"repeat_penalty": 5.0, "ignore_eos": True})
    vllm = _text(client, model_dir, **fields, extra_body={"repetition_penalty": 5.0, "ignore_eos": True})
    assert llama == vllm
    assert llama != _text(client, model_dir, **fields, extra_body={"ignore_eos": True})
    with pytest.raises(openai.BadRequestError) as raised:
        _text(client, model_dir, extra_body={"repeat_penalty": 1.5, "repetition_penalty": 1.2})
    assert raised.value.body["param"] == "repeat_penalty"  # type: ignore[index]


def test_seed_minus_one_and_long_stop_lists(client: openai.OpenAI, model_dir: str) -> None:
    assert _text(client, model_dir, seed=-1, temperature=0.8) is not None
    stops = [f"never-occurs-{i}" for i in range(20)]
    assert _text(client, model_dir, temperature=0, stop=stops) == _text(client, model_dir, temperature=0)


def _sse_lines(url: str, body: dict[str, Any]) -> list[str]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def test_a_backend_failing_mid_stream_ends_with_an_error_and_no_done() -> None:
    from declaring_backend import Declaring

    with in_process_server(Declaring((), fail_after=3)) as url:
        body = {"model": "smoke", "messages": MESSAGES, "max_tokens": 20, "stream": True, "ignore_eos": True}
        lines = _sse_lines(url, body)
    assert "data: [DONE]" not in lines
    last = json.loads(lines[-1].removeprefix("data: "))
    assert "the test backend failed mid-stream" in last["error"]["message"]
    # the opening frame, then the pieces decoded before the failure (joined when the reader lags)
    assert sum('"content"' in line for line in lines) >= 2


def test_a_stream_cut_by_shutdown_ends_with_an_error_and_no_done(start_server: Any, model_dir: str) -> None:
    server = start_server([model_dir, "-b", "reference", "-p", "fp32", "--preload"])
    body = {"model": model_dir, "messages": MESSAGES, "max_tokens": 400, "stream": True, "ignore_eos": True}
    lines: list[str] = []
    stopped: list[tuple[int, str]] = []
    stopper = threading.Thread(target=lambda: stopped.append(server.stop()), daemon=True)
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120) as response:
        for line in (line for line in response.iter_lines() if line):
            lines.append(line)
            if len(lines) == 3:  # decoding: now stop the server (Ctrl-C), once
                stopper.start()
    stopper.join(90)
    assert len(lines) >= 3
    assert "data: [DONE]" not in lines, "a cut answer must not look complete"
    last = json.loads(lines[-1].removeprefix("data: "))
    assert last["error"]["code"] == "generation_cancelled"
    ((code, log),) = stopped
    assert code == 0 and "Traceback" not in log and "Application shutdown complete" in log, log


def test_a_tool_call_cut_by_max_tokens_leaks_no_json(model_dir: str, client: openai.OpenAI) -> None:
    pytest.importorskip("llguidance", reason="tool calling on the reference backend needs phi3-core[structured]")
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "$schema": "https://json-schema.org/draft-07/schema",
                "$id": "https://some/internal/name",
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for stream in (False, True):
        forced = {"type": "function", "function": {"name": "get_weather"}}
        request: dict[str, Any] = {"tools": [tool], "tool_choice": forced, "max_tokens": 6, "temperature": 0}
        if not stream:
            answer = client.chat.completions.create(model=model_dir, messages=MESSAGES, **request)  # type: ignore[arg-type]
            choice = answer.choices[0]
            assert choice.finish_reason == "length"
            assert not choice.message.tool_calls
            assert not choice.message.content  # no '{"tool_calls":[{"name":"get_w' in the answer
        else:
            chunks = list(client.chat.completions.create(model=model_dir, messages=MESSAGES, stream=True, **request))  # type: ignore[arg-type]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
            assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
                "length"
            ]


def test_min_p_is_refused_naming_it_where_the_runtime_has_none() -> None:
    from declaring_backend import Declaring

    with in_process_server(Declaring(())) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "smoke", "messages": MESSAGES, "temperature": 0.7, "min_p": 0.1, "max_tokens": 2},
            timeout=60,
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "min_p"
    assert "no min_p sampler" in response.json()["error"]["message"]


def test_a_lone_surrogate_is_a_clear_400(server: ServerProcess, model_dir: str) -> None:
    body = json.dumps({"model": model_dir, "messages": [{"role": "user", "content": "a"}], "max_tokens": 2})
    body = body.replace('"content": "a"', '"content": "a\\ud800b"')  # JSON's escape for a lone surrogate
    response = httpx.post(
        f"{server.base_url}/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert "not valid Unicode: a lone surrogate U+D800" in response.json()["error"]["message"]
