"""phi3-openvino behind the server: auth, concurrent first loads, LRU and idle unload, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from .harness import API_KEY, ServerProcess, assert_clean_exit

pytest.importorskip("openvino_genai", reason="needs phi3-openvino installed (nox -s server)")

MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]
IDLE_S = 2.0


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    args = ["smoke", "-b", "openvino", "--max-loaded", "1", "--preload"]
    return start_server(args, api_key=API_KEY)  # type: ignore[no-any-return]


def client_for(server: ServerProcess, key: str | None = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key or "", max_retries=0, timeout=120)


def loaded(server: ServerProcess) -> list[str]:
    return [m["id"] for m in httpx.get(f"{server.url}/health", timeout=30).json()["loaded"]]


def test_preload_loaded_it_before_the_first_request(server: ServerProcess) -> None:
    assert server.metric("phi3_model_loads_total", outcome="ok") >= 1
    assert "loaded smoke on openvino/genai" in server.log()


def test_auth_is_required_on_v1_only(server: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "wrong-key").models.list()
    no_key = httpx.post(f"{server.base_url}/chat/completions", content=b"{broken", timeout=30)
    assert no_key.status_code == 401  # before the body is even parsed
    assert no_key.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 200
    assert [m.id for m in client_for(server).models.list().data] == ["smoke"]


def test_chat_and_stream_on_openvino(server: ServerProcess) -> None:
    client = client_for(server)
    answer = client.chat.completions.create(model="smoke", temperature=0, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="smoke",
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=5,
            stream=True,
        )
        if c.choices
    )
    assert answer.choices[0].message.content == streamed
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    card = client.models.list().data[0].model_dump()
    assert (card["backend"], card["engine"], card["device"]) == ("openvino", "genai", "CPU")


def test_concurrent_first_requests_load_once_then_lru_unloads(server: ServerProcess) -> None:
    variant = "smoke@openvino:int8"

    async def burst() -> list[str | None]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=300)
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(model=variant, temperature=0, messages=MESSAGES, max_tokens=3)  # type: ignore[arg-type]
                for _ in range(4)
            )
        )
        await client.close()
        return [a.choices[0].message.content for a in answers]

    answers = asyncio.run(burst())
    assert len(answers) == 4 and len(set(answers)) == 1
    assert server.metric("phi3_model_loads_total", model=variant, outcome="ok") == 1
    # --max-loaded 1: loading the variant unloaded the least recently used model
    server.wait_for("the LRU unload", lambda: server.metric("phi3_model_unloads_total", reason="lru") >= 1)
    assert loaded(server) == [variant]
    card = next(m for m in client_for(server).models.list().data if m.id == variant).model_dump()
    assert card["precision"] == "int8"
    assert "unloaded smoke@openvino:default:auto from openvino/genai (CPU)" in server.log()


def test_idle_model_is_unloaded(start_server: Any) -> None:
    """End to end: the idle model goes, and comes back on the next request. That it goes only once idle
    for --idle-unload (not before) is checked against the pool's clock in test_idle_unload_clock.py."""
    server: ServerProcess = start_server(["smoke", "-b", "openvino", "--idle-unload", str(IDLE_S)], api_key=API_KEY)
    client_for(server).completions.create(model="smoke", temperature=0, prompt="Hi", max_tokens=2)
    assert server.metric("phi3_model_loads_total", model="smoke", outcome="ok") == 1
    server.wait_for("the idle unload", lambda: loaded(server) == [], timeout=IDLE_S + 30)
    assert server.metric("phi3_model_unloads_total", reason="idle") >= 1
    assert server.metric("phi3_loaded_models") == 0
    # and it comes back on the next request
    client_for(server).completions.create(model="smoke", temperature=0, prompt="Hi", max_tokens=2)
    assert loaded(server) == ["smoke"]


def test_bad_suffix_and_unknown_backend_are_400(server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(server).completions.create(model="smoke@no-such-backend", temperature=0, prompt="Hi", max_tokens=2)
    assert "no-such-backend" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        client_for(server).completions.create(model="smoke@", temperature=0, prompt="Hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client_for(server).completions.create(model="other@openvino", temperature=0, prompt="Hi", max_tokens=2)


def test_ctrl_c_mid_stream_shuts_down_cleanly(start_server: Any) -> None:
    server: ServerProcess = start_server(["smoke", "-b", "openvino", "--preload"])
    with httpx.Client(timeout=60) as client:
        body = {"model": "smoke", "messages": MESSAGES, "max_tokens": 900, "stream": True, "ignore_eos": True}
        with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            lines = (line for line in response.iter_lines() if line)
            next(lines)
            assert_clean_exit(server)
            rest = list(lines)  # what the server sent before it exited
    # the 900-token answer was cut by the shutdown, not waited for
    assert rest and "data: [DONE]" not in rest, rest[-3:]
    assert json.loads(rest[-1].removeprefix("data: "))["error"]["code"] == "generation_cancelled"
    assert "unloaded smoke@openvino" in server.log()


def test_continuous_batching_runs_requests_at_once(start_server: Any) -> None:
    server: ServerProcess = start_server(
        ["smoke", "-b", "openvino", "-O", "max_concurrent_generations=2", "--max-queue", "0", "--preload"]
    )
    card = httpx.get(f"{server.base_url}/models", timeout=30).json()["data"][0]
    assert card["max_concurrent_generations"] == 2
    body = {"model": "smoke", "messages": MESSAGES, "max_tokens": 900, "stream": True, "ignore_eos": True}
    url = f"{server.base_url}/chat/completions"
    with (
        httpx.Client(timeout=60) as one,
        httpx.Client(timeout=60) as two,
        one.stream("POST", url, json=body) as first,
    ):
        first_lines = first.iter_lines()  # kept: dropping the iterator would close the response
        next(first_lines)
        with two.stream("POST", url, json=body) as second:
            second_lines = second.iter_lines()
            next(second_lines)
            assert server.metric("phi3_active_generations", model="smoke") == 2
            third = httpx.post(url, json={"model": "smoke", "messages": MESSAGES, "max_tokens": 2}, timeout=60)
            assert third.status_code == 429  # two slots busy, --max-queue 0
    server.wait_for("both cancelled", lambda: server.metric("phi3_active_generations") == 0, timeout=30)
    answer = client_for(server, "unused").chat.completions.create(
        model="smoke", temperature=0, messages=MESSAGES, max_tokens=4
    )  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.completion_tokens == 4
