"""The OpenAI API end to end on core's reference backend (transformers, CPU) and the smoke model."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import openai
import pytest

import phi3
from phi3.testing import reference_backend

from .harness import ServerProcess

MODEL = "smoke"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about AI PCs."}]


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    return start_server([MODEL, "-b", "reference", "-p", "fp32", "--max-queue", "1"])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local() -> Any:
    """The same model in this process: what the server must reproduce token for token."""
    phi3.plugins.reset_registry()
    registry = phi3.plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    model = phi3.load(MODEL, backend="reference", precision="fp32")
    yield model
    model.close()


def test_health_and_models(server: ServerProcess, client: openai.OpenAI) -> None:
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok"
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_chat_matches_in_process_generation_and_usage(client: openai.OpenAI, local: Any) -> None:
    answer = client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=12)  # type: ignore[arg-type]
    expected = local.chat(MESSAGES, max_new_tokens=12)
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    assert answer.usage.completion_tokens == expected.new_tokens
    assert answer.usage.total_tokens == expected.prompt_tokens + expected.new_tokens
    assert answer.choices[0].finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert answer.model == MODEL


def test_max_completion_tokens_wins_and_finish_length(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=50,
        max_completion_tokens=3,
        extra_body={"ignore_eos": True},
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert answer.choices[0].finish_reason == "length"


def test_text_parts_and_developer_role_equal_plain_messages(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    parts = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Tell me about AI PCs."}]},
        ],
        max_tokens=8,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage == plain.usage


def test_streaming_chat_with_usage(server: ServerProcess, client: openai.OpenAI, local: Any) -> None:
    expected = local.chat(MESSAGES, max_new_tokens=10)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected.prompt_tokens, expected.new_tokens)
    # the raw stream ends with [DONE]
    with httpx.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": 3, "stream": True},
        timeout=60,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


def _check_timings(timings: Any, prompt_tokens: int, completion_tokens: int) -> None:
    assert timings["prompt_n"] == prompt_tokens and timings["predicted_n"] == completion_tokens
    assert timings["prompt_ms"] > 0
    rate = timings["predicted_per_second"]
    assert rate > 0 and abs(timings["predicted_per_token_ms"] * rate - 1000) < 1e-6
    assert timings["predicted_ms"] == pytest.approx((completion_tokens - 1) / rate * 1000)


def test_server_side_timings_come_with_usage(client: openai.OpenAI) -> None:
    """llama.cpp's ``timings`` object: engine speed as the server measured it, apart from HTTP/SSE."""
    answer = client.chat.completions.create(
        model=MODEL, temperature=0, messages=MESSAGES, max_tokens=8, extra_body={"ignore_eos": True}
    )  # type: ignore[arg-type]
    assert answer.usage is not None and answer.model_extra is not None
    _check_timings(answer.model_extra["timings"], answer.usage.prompt_tokens, answer.usage.completion_tokens)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    last = chunks[-1]
    assert last.usage is not None and last.model_extra is not None
    _check_timings(last.model_extra["timings"], last.usage.prompt_tokens, last.usage.completion_tokens)
    assert all(not (chunk.model_extra or {}).get("timings") for chunk in chunks[:-1])


def test_stop_string_across_sse_chunks(client: openai.OpenAI) -> None:
    pieces = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(
            model=MODEL,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=40,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        if c.choices and c.choices[0].delta.content
    ]
    full = "".join(pieces)
    stop, at = None, -1
    offset = 0
    for left, right in itertools.pairwise(pieces):
        offset += len(left)
        # the shortest end of this chunk that, with the next chunk's first character, first occurs here
        # (at worst all the text so far: pieces queued behind a slow reader arrive joined)
        for size in range(1, offset + 1):
            candidate = full[offset - size : offset] + right[0]
            if full.find(candidate) == offset - size:
                stop, at = candidate, offset - size
                break
        if stop is not None:
            break
    assert stop is not None, f"no stop string spans two chunks of {pieces!r}"
    streamed = list(
        client.chat.completions.create(
            model=MODEL,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=40,
            stream=True,
            stop=[stop],
            extra_body={"ignore_eos": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == full[:at]
    assert streamed[-1].choices[0].finish_reason == "stop"
    plain = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,
        max_tokens=40,
        stop=stop,
        extra_body={"ignore_eos": True},  # type: ignore[arg-type]
    )
    assert plain.choices[0].message.content == full[:at]
    assert plain.choices[0].finish_reason == "stop"


def test_seed_and_sampling_are_reproducible(client: openai.OpenAI) -> None:
    def sample() -> str | None:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=12,
            temperature=0.9,
            top_p=0.9,
            seed=7,  # type: ignore[arg-type]
        )
        return answer.choices[0].message.content

    assert sample() == sample()


def test_completions_plain_and_streamed(client: openai.OpenAI, local: Any) -> None:
    expected = local.generate("Once upon a time", max_new_tokens=8)
    answer = client.completions.create(model=MODEL, temperature=0, prompt="Once upon a time", max_tokens=8)
    assert answer.choices[0].text == expected.text
    assert answer.usage is not None and answer.usage.completion_tokens == expected.new_tokens
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    chunks = list(
        client.completions.create(
            model=MODEL,
            temperature=0,
            prompt="Once upon a time",
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == expected.new_tokens


def test_async_client_streaming_and_not(server: ServerProcess) -> None:
    async def run() -> tuple[str | None, str]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        whole = await client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=6)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model=MODEL,
            temperature=0,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=6,
            stream=True,
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return whole.choices[0].message.content, streamed

    whole, streamed = asyncio.run(run())
    assert whole == streamed


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unsupported_parameters_are_400_naming_them(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=2, extra_body=extra)  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param
    assert param in body["message"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", temperature=0, messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": "5"}).encode(), "max_tokens"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 0}).encode(), "max_tokens"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "temperature": "hot"}).encode(), "temperature"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "stream": "yes"}).encode(), "stream"),
        (json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}).encode(), "messages.0.role"),
        (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode(), "messages.0.content"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
        (json.dumps({"model": 3, "messages": MESSAGES}).encode(), "model"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "stop": ["a", ""]}).encode(), "stop"),
    ],
)
def test_malformed_requests_are_400(server: ServerProcess, body: bytes, param: str | None) -> None:
    response = server.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "Traceback" not in response.text and "\n" not in error["message"]


def test_image_parts_are_refused_by_name(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "image_url" in response.json()["error"]["message"]


def test_oversized_body_is_413(server: ServerProcess) -> None:
    body = json.dumps({"model": MODEL, "prompt": "a" * (5 * 1024 * 1024)}).encode()
    response = server.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_method(server: ServerProcess) -> None:
    assert server.get("/v1/nothing").status_code == 404
    assert server.get("/v1/chat/completions").json()["error"]["message"].startswith("GET is not allowed")


def test_no_auth_needed_without_a_key(server: ServerProcess) -> None:
    assert server.get("/v1/models").status_code == 200


def _start_long_stream(server: ServerProcess, tokens: int = 1000) -> tuple[Any, Any]:
    """An open SSE response decoding many tokens; the caller reads or drops it."""
    client = httpx.Client(timeout=60)
    request = client.build_request(
        "POST",
        f"{server.base_url}/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "max_tokens": tokens, "stream": True, "ignore_eos": True},
    )
    return client, client.send(request, stream=True)


def test_client_disconnect_cancels_generation(server: ServerProcess) -> None:
    server.wait_for("no generation running", lambda: server.metric("phi3_active_generations") == 0)
    before = server.metric("phi3_generated_tokens_total", model=MODEL)
    cancelled = server.metric("phi3_cancelled_generations_total", model=MODEL)
    client, response = _start_long_stream(server, tokens=1000)
    lines = response.iter_lines()
    received = 0
    for line in lines:
        if line.startswith("data: {") and '"content":""' not in line:
            received += 1
            if received == 3:
                break
    response.close()
    client.close()
    server.wait_for("the generation to stop", lambda: server.metric("phi3_active_generations") == 0, timeout=30)
    decoded = server.metric("phi3_generated_tokens_total", model=MODEL) - before
    assert server.metric("phi3_cancelled_generations_total", model=MODEL) == cancelled + 1
    # the model decodes ~2 ms a token here: a slow cancel would run on towards 1000
    assert decoded < 100, f"{decoded} tokens decoded after reading {received}"


def test_queue_is_fifo_and_full_queue_is_429(server: ServerProcess) -> None:
    server.wait_for("no generation running", lambda: server.metric("phi3_active_generations") == 0)
    first_client, first = _start_long_stream(server)  # takes the one slot

    async def second_request() -> str | None:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
        answer = await client.chat.completions.create(model=MODEL, temperature=0, messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
        await client.close()
        return answer.choices[0].message.content

    import threading

    outcome: list[object] = []
    waiter = threading.Thread(target=lambda: outcome.append(asyncio.run(second_request())))
    try:
        lines = first.iter_lines()  # keep it: dropping this iterator would close the response
        next(lines)  # the first request is decoding
        waiter.start()
        server.wait_for("one queued request", lambda: server.metric("phi3_queue_depth", model=MODEL) == 1)
        third = server.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 2})
        assert third.status_code == 429, third.text
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["type"] == "rate_limit_error"
    finally:
        first.close()
        first_client.close()
    waiter.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], str)


def test_metrics_exposition(server: ServerProcess) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for name in (
        "phi3_requests_total",
        "phi3_prompt_tokens_total",
        "phi3_generated_tokens_total",
        "phi3_time_to_first_token_seconds_bucket",
        "phi3_time_per_output_token_seconds_bucket",
        "phi3_queue_depth",
        "phi3_loaded_models",
    ):
        assert name in text, name
    assert server.metric("phi3_requests_total", route="/v1/chat/completions", status="200") > 0
    assert server.metric("phi3_requests_total", route="/v1/chat/completions", status="400") > 0
    assert server.metric("phi3_loaded_models") == 1


def test_models_list_shows_the_loaded_backend(client: openai.OpenAI) -> None:
    card = client.models.list().data[0].model_dump()
    assert card["backend"] == "reference" and card["device"] == "cpu" and card["precision"] == "fp32"
    assert card["max_concurrent_generations"] == 1


def test_ttft_is_measured(server: ServerProcess) -> None:
    assert server.metric("phi3_time_to_first_token_seconds_count", model=MODEL) > 0
    assert server.metric("phi3_time_to_first_token_seconds_sum", model=MODEL) > 0


def test_preload_failure_is_one_line_and_exit_1(run_phi3: Any) -> None:
    done = run_phi3("serve", "no-such-model", "-b", "reference", "-p", "fp32", "--preload", "--port", "1", timeout=300)
    assert done.returncode == 1
    assert "Error: 'no-such-model' is neither" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_serve_refuses_preload_without_models(run_phi3: Any) -> None:
    done = run_phi3("serve", "--preload", timeout=300)
    assert done.returncode == 1 and "--preload needs at least one MODEL" in done.stderr


def test_client_giving_up_on_a_plain_answer_cancels_it(server: ServerProcess) -> None:
    server.wait_for("no generation running", lambda: server.metric("phi3_active_generations") == 0)
    cancelled = server.metric("phi3_cancelled_generations_total", model=MODEL)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=0.5)
    server.wait_for("the generation to stop", lambda: server.metric("phi3_active_generations") == 0, timeout=30)
    assert server.metric("phi3_cancelled_generations_total", model=MODEL) == cancelled + 1
