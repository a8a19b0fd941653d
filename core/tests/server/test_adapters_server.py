"""LoRA adapters over HTTP: ``phi3 serve smoke --adapter a=DIR --adapter b=DIR`` and ``"model": "smoke:a"``.

Two random, discriminating peft adapters of the smoke model (made with peft by the test kit) are
served on the reference backend (transformers + peft, fp32). The official openai client alternates
between them and the base; every answer must be the one the same adapter gives in-process, and that
in-process answer must be transformers + peft's merged fp32 greedy answer, so a server that applied
the wrong adapter, leaked one into the next request, or ignored the name fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .conftest import in_process_adapter_answers
from .harness import ServerProcess

pytest.importorskip("peft", reason="adapters are made and applied with peft (phi3-core[testing])")


MODEL = "smoke"
PROMPT = "The capital of France is"
TOKENS = 8


@pytest.fixture(scope="module")
def server(start_server: Any, adapter_dirs: dict[str, Path]) -> ServerProcess:
    args = [MODEL, "-b", "reference", "-p", "fp32", "--preload"]
    for name, folder in adapter_dirs.items():
        args += ["--adapter", f"{name}={folder}"]
    return start_server(args)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def expected(adapter_dirs: dict[str, Path]) -> dict[str | None, str]:
    """In-process answers per adapter (None: the base), each checked against transformers + peft merged."""
    return in_process_adapter_answers(adapter_dirs, PROMPT, TOKENS)


def _complete(client: openai.OpenAI, model: str) -> str:
    answer = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0, extra_body={"ignore_eos": True}
    )
    return answer.choices[0].text


def test_models_lists_the_base_and_each_adapter(server: ServerProcess, client: openai.OpenAI) -> None:
    cards = {m.id: m for m in client.models.list().data}
    assert list(cards) == [MODEL, f"{MODEL}:a", f"{MODEL}:b"]
    assert cards[f"{MODEL}:a"].model_dump().get("parent") == MODEL
    raw = httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]
    assert "parent" not in raw[0], "the base model's card carries no parent field"


def test_alternating_adapters_give_each_adapters_answer(client: openai.OpenAI, expected: dict[str | None, str]) -> None:
    order: list[str | None] = ["a", None, "b", "a", "b", None]
    for name in order:
        field = MODEL if name is None else f"{MODEL}:{name}"
        assert _complete(client, field) == expected[name], f"request for {field}"


def test_chat_with_an_adapter_differs_from_the_base(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Say hello."}]
    texts = {
        field: client.chat.completions.create(model=field, messages=messages, max_tokens=TOKENS, temperature=0)
        .choices[0]
        .message.content
        for field in (MODEL, f"{MODEL}:a", f"{MODEL}:b")
    }
    assert len(set(texts.values())) == 3, texts


def test_an_unknown_adapter_is_a_400_naming_the_served_ones(server: ServerProcess, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _complete(client, f"{MODEL}:nope")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "adapter_not_found" and body["param"] == "model"
    assert "'nope'" in body["message"] and "a, b" in body["message"]
    # the base is still served after the refusal
    assert httpx.get(f"{server.url}/health", timeout=30).json()["status"] == "ok"


def _serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phi3", "serve", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_adapter_needs_exactly_one_model(adapter_dirs: dict[str, Path]) -> None:
    done = _serve_fails(MODEL, "phi3-mini-4k", "--adapter", f"a={adapter_dirs['a']}")
    assert done.returncode != 0
    assert "exactly one MODEL" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_a_broken_adapter_stops_preload_with_one_line(tmp_path: Path, adapter_dirs: dict[str, Path]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in adapter_dirs["a"].iterdir():
        data = item.read_bytes()
        (broken / item.name).write_bytes(data[: len(data) // 2] if item.suffix == ".safetensors" else data)
    done = _serve_fails(MODEL, "-b", "reference", "-p", "fp32", "--preload", "--adapter", f"x={broken}")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "adapter" in done.stderr.lower()
