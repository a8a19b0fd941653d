"""``phi3 serve --ray`` on a two-node Ray cluster: the smoke model on core's reference backend.

The server is the real command (``python -m phi3 serve --ray --ray-address ...``) in a subprocess;
clients are the official ``openai`` package and raw ``httpx``. Two replicas of one CPU each, on a
cluster of two one-CPU nodes, so Ray must put one replica on each node. Every wait is bounded.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server.harness import API_KEY, ServerProcess

import phi3
from phi3.testing import reference_backend

from .conftest import TwoNodes, wait_gone

MODEL = "smoke"
MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]
REPLICA_HEADER = "x-phi3-replica"
RAY_START_TIMEOUT_S = 240.0


def start(args: list[str], log: Path, api_key: str | None = None) -> ServerProcess:
    full = [*args, "--host", "127.0.0.1", "--ray-start-timeout", "180"]
    server = ServerProcess([*full, "--api-key", api_key] if api_key else full, log, api_key)
    server.wait_ready(RAY_START_TIMEOUT_S)
    return server


def stop_cleanly(server: ServerProcess) -> str:
    """Ctrl-C: exit 0, the app removed from the cluster, and none of the command's processes left."""
    own = {child.pid: child.name() for child in _children(server.process.pid)}
    code, log = server.stop(timeout=90)
    assert code == 0, f"exit status {code}:\n{log[-4000:]}"
    assert "phi3 serve stopped" in log, log[-4000:]
    left = wait_gone(own)
    assert not left, f"processes of phi3 serve --ray still running: {left}"
    return log


@contextlib.contextmanager
def running(args: list[str], log: Path, api_key: str | None = None) -> Iterator[ServerProcess]:
    """:func:`start` a two-replica server and wait until both replicas report; Ctrl-C it cleanly
    (:func:`stop_cleanly`) at the end unless it has already exited."""
    process = start(args, log, api_key)
    try:
        process.wait_for("both replicas to report", lambda: len(replicas(process)) == 2, timeout=60)
        yield process
    finally:
        if process.process.poll() is None:
            stop_cleanly(process)


def _children(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def replicas(server: ServerProcess, model: str = MODEL) -> list[dict[str, Any]]:
    cards = {card["id"]: card for card in server.get("/v1/models").json()["data"]}
    return list(cards[model]["replicas"])


@pytest.fixture(scope="module")
def server(two_nodes: TwoNodes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve-ray") / "serve.log"
    args = ["--ray", "--ray-address", two_nodes.address, MODEL, "-b", "reference", "-p", "fp32"]
    with running([*args, "--replicas", "2", "--max-queue", "1"], log, api_key=API_KEY) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local() -> Iterator[Any]:
    """The same model in this process: what every replica must reproduce token for token."""
    phi3.plugins.reset_registry()
    registry = phi3.plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    model = phi3.load(MODEL, backend="reference", precision="fp32")
    yield model
    model.close()


def test_one_replica_per_node_reported_in_models(server: ServerProcess, two_nodes: TwoNodes) -> None:
    found = replicas(server)
    assert {replica["node"] for replica in found} == {two_nodes.head_node_id, two_nodes.worker_node_id}
    for replica in found:
        assert replica["loaded"] is True
        assert (replica["backend"], replica["device"], replica["precision"]) == ("reference", "cpu", "fp32")
        assert replica["replica"].startswith("phi3-model-0-smoke#")
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert [card["id"] for card in health["loaded"]] == [MODEL]


def test_streamed_answers_match_in_process_generation(client: openai.OpenAI, local: Any) -> None:
    expected = local.chat(MESSAGES, max_new_tokens=12)
    stream = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected.text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.new_tokens
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == ["length" if expected.finish_reason == "length" else "stop"]


def test_requests_spread_over_both_replicas(server: ServerProcess, client: openai.OpenAI, local: Any) -> None:
    expected = local.chat(MESSAGES, max_new_tokens=6).text
    answered: collections.Counter[str] = collections.Counter()
    for _ in range(12):  # the router picks among idle replicas at random: all 12 on one is 2 ** -11
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, temperature=0, messages=MESSAGES, max_tokens=6
        )  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content == expected
        answered[raw.headers[REPLICA_HEADER]] += 1
    assert set(answered) == {replica["replica"] for replica in replicas(server)}, answered

    def per_replica() -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        return {
            sample.labels["replica"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "phi3_generated_tokens_total" and sample.labels.get("model") == MODEL
        }

    server.wait_for("both replicas' token counters", lambda: set(per_replica()) == set(answered), timeout=30)
    assert all(value > 0 for value in per_replica().values())
    assert server.metric("phi3_requests_total", route="/v1/chat/completions", status="200") >= 12


def test_auth_and_errors_in_openai_shape(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}
    refused = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=30)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    unknown = server.post("/v1/chat/completions", json={**body, "model": "not-served"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "model"
    bad = server.post("/v1/chat/completions", json={**body, "n": 2})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "n"
    malformed = server.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "invalid_json"


def test_response_format_is_enforced_on_the_replica(client: openai.OpenAI) -> None:
    """The request's format (and the up-front check that the backend can enforce it) travel to the
    replica with the request: the random-weight smoke model writes valid JSON only under the grammar."""
    pytest.importorskip("llguidance", reason="structured output on the reference backend needs phi3-core[structured]")
    jsonschema = pytest.importorskip("jsonschema")
    from phi3.testing import structured

    schema = structured.SCHEMAS["flat_required"]
    answer = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=160,
        response_format={"type": "json_schema", "json_schema": {"name": "flat", "schema": schema, "strict": True}},
    )
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)


def test_full_queues_answer_429_with_retry_after(server: ServerProcess) -> None:
    """2 replicas x (1 running + --max-queue 1 waiting): of 6 long requests at once, 2 or more get 429."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 400, "ignore_eos": True}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: server.post("/v1/chat/completions", json=body), range(6)))
    statuses = collections.Counter(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 429}, [answer.text for answer in answers]
    assert statuses[429] >= 2, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"]["code"] == "queue_full"
        else:
            assert answer.json()["usage"]["completion_tokens"] == 400


def test_client_disconnect_cancels_the_generation_on_its_replica(server: ServerProcess) -> None:
    server.wait_for("no generation running", lambda: server.metric("phi3_active_generations") == 0, timeout=60)
    cancelled = server.metric("phi3_cancelled_generations_total", model=MODEL)
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json=body, headers=server.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # the proxy sees the client leave, the ingress cancels the replica's stream, the replica its decode
    server.wait_for(
        "the cancelled generation to be counted",
        lambda: server.metric("phi3_cancelled_generations_total", model=MODEL) == cancelled + 1,
        timeout=60,
    )
    server.wait_for("the slot to be free", lambda: server.metric("phi3_active_generations") == 0, timeout=30)
    assert server.metric("phi3_generated_tokens_total", model=MODEL) > 0


def test_killed_replica_fails_its_stream_cleanly_and_the_other_serves(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    pids = {replica["replica"]: replica["pid"] for replica in replicas(server)}
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        temperature=0,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=4000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    victim = raw.headers[REPLICA_HEADER]
    (survivor,) = set(pids) - {victim}
    chunks = iter(raw.parse())
    for _ in range(3):
        next(chunks)
    os.kill(pids[victim], signal.SIGKILL)
    with pytest.raises(openai.APIError, match="stopped mid-answer") as failed:
        for _ in range(4000):
            next(chunks)
    assert "replica_lost" in str(failed.value.body) or failed.value.code == "replica_lost"
    served: collections.Counter[str] = collections.Counter()
    for _ in range(4):
        answer = client.chat.completions.with_raw_response.create(
            model=MODEL, temperature=0, messages=MESSAGES, max_tokens=4
        )  # type: ignore[arg-type]
        served[answer.headers[REPLICA_HEADER]] += 1
    assert victim not in served
    assert survivor in served

    def restarted() -> bool:
        now = {replica["replica"] for replica in replicas(server)}
        return len(now) == 2 and victim not in now and survivor in now

    server.wait_for("Ray Serve to restart the killed replica", restarted, timeout=180)


def test_npu_resource_places_the_replica_on_the_npu_node(
    server: ServerProcess, two_nodes: TwoNodes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """After the 2-replica server stops cleanly, a replica that needs ``npu`` lands on the NPU node."""
    stop_cleanly(server)
    log = tmp_path_factory.mktemp("serve-ray-npu") / "serve.log"
    args = ["--ray", "--ray-address", two_nodes.address, MODEL, "-b", "reference", "-p", "fp32"]
    npu = start([*args, "--ray-resource", "npu=1", "--replica-cpus", "0"], log)
    try:
        npu.wait_for("the replica to report", lambda: len(replicas(npu)) == 1, timeout=60)
        (replica,) = replicas(npu)
        assert replica["node"] == two_nodes.worker_node_id
        answer = npu.post("/v1/completions", json={"model": MODEL, "prompt": "hello", "max_tokens": 3})
        assert answer.status_code == 200
        assert answer.headers[REPLICA_HEADER] == replica["replica"]
    finally:
        stop_cleanly(npu)
