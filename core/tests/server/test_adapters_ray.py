"""LoRA adapters on Ray Serve: ``phi3 serve smoke --adapter a=DIR --adapter b=DIR --ray``.

The same check as :mod:`.test_adapters_server`, with the model on Ray Serve replicas instead of in
the server process: the real command starts its own local Ray (as ``test_ray_local`` does), with two
replicas of the smoke model on the reference backend (transformers + peft, fp32), each loading the
base with both adapters from the same PHI3_HOME. The official openai client alternates between the
adapters and the base; every answer must be the one the same adapter gives in-process, which must
itself be transformers + peft's merged fp32 greedy answer, so a replica that loaded no adapter, a
name not passed through to the generation, or one adapter leaking into the next request fails.
Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray tests need phi3-core[ray] (nox -s ray)")
pytest.importorskip("psutil", reason="the Ray tests check for leftover processes with psutil")
pytest.importorskip("peft", reason="adapters are made and applied with peft (phi3-core[testing])")

import openai
from ray_serve.conftest import descendants, wait_gone
from ray_serve.test_ray_cluster import REPLICA_HEADER, replicas, running

from phi3.errors import ConfigError

from .conftest import in_process_adapter_answers
from .harness import ServerProcess

MODEL = "smoke"
PROMPT = "The capital of France is"
TOKENS = 8


@pytest.fixture(scope="module")
def server(
    phi3_home: Path, adapter_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("serve-ray-adapters") / "serve.log"
    args = ["--ray", MODEL, "-b", "reference", "-p", "fp32", "--replicas", "2", "--replica-cpus", "0.5"]
    for name, folder in adapter_dirs.items():
        args += ["--adapter", f"{name}={folder}"]
    with running(args, log) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def expected(server: ServerProcess, adapter_dirs: dict[str, Path]) -> dict[str | None, str]:
    """In-process answers per adapter (None: the base), each checked against transformers + peft merged.

    It depends on ``server`` so that the replicas, not this process, convert the adapters first.
    """
    return in_process_adapter_answers(adapter_dirs, PROMPT, TOKENS)


def _complete(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """The answer's text and the replica that gave it."""
    raw = client.completions.with_raw_response.create(
        model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0, extra_body={"ignore_eos": True}
    )
    return raw.parse().choices[0].text, raw.headers[REPLICA_HEADER]


def test_both_replicas_converted_each_adapter_once_in_the_shared_home(server: ServerProcess, phi3_home: Path) -> None:
    """Two replicas loaded the base with both adapters from one PHI3_HOME at the same time: the
    cache's per-key lock leaves exactly one complete conversion per adapter."""
    converted = sorted((phi3_home / "adapters" / "reference").iterdir())
    assert len(converted) == 2, converted
    assert all((folder / "phi3-adapter.json").is_file() for folder in converted), converted
    for replica in replicas(server):
        assert replica["loaded"] is True and replica["replica"].startswith("phi3-model-0-smoke#"), replica


def test_models_lists_the_base_and_each_adapter_with_its_parent(client: openai.OpenAI) -> None:
    cards = {m.id: m.model_dump() for m in client.models.list().data}
    assert list(cards) == [MODEL, f"{MODEL}:a", f"{MODEL}:b"]
    assert cards[f"{MODEL}:a"].get("parent") == MODEL and cards[f"{MODEL}:b"].get("parent") == MODEL
    assert cards[MODEL].get("parent") is None, "the base model's card carries no parent"


def test_alternating_adapters_give_each_adapters_answer(client: openai.OpenAI, expected: dict[str | None, str]) -> None:
    order: list[str | None] = ["a", None, "b", "a", "b", None, "a"]
    for name in order:
        field = MODEL if name is None else f"{MODEL}:{name}"
        text, replica = _complete(client, field)
        assert text == expected[name], f"request for {field} (answered by {replica})"
        assert replica.startswith("phi3-model-0-smoke#"), f"{field} ran on {replica}, not the base's deployment"


def test_an_unknown_adapter_is_a_400_naming_the_served_ones(
    client: openai.OpenAI, expected: dict[str | None, str]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _complete(client, f"{MODEL}:nope")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "adapter_not_found" and body["param"] == "model"
    assert "'nope'" in body["message"] and "a, b" in body["message"]
    assert _complete(client, f"{MODEL}:b")[0] == expected["b"], "the adapters are still served after the refusal"


def test_the_application_builder_takes_adapters_for_one_model(adapter_dirs: dict[str, Path]) -> None:
    """``serve run`` / RayService configs name adapters as ``adapters: {NAME: PATH}``; the same
    rules as ``--adapter`` apply before anything is deployed."""
    from phi3.server.ray_deployments import build_app

    build_app({"models": MODEL, "adapters": {name: str(path) for name, path in adapter_dirs.items()}})
    with pytest.raises(ConfigError, match="exactly one MODEL"):
        build_app({"models": [MODEL, "phi3-mini-4k"], "adapters": {"a": str(adapter_dirs["a"])}})
    with pytest.raises(ConfigError, match="contains ':'"):
        build_app({"models": MODEL, "adapters": [f"a:b={adapter_dirs['a']}"]})


def test_a_broken_adapter_fails_the_deployment_with_one_line(tmp_path: Path, adapter_dirs: dict[str, Path]) -> None:
    """A truncated adapter: every replica fails to load, so the command ends with phi3's one-line
    error and exit 1 (never a hang), caches no conversion, and leaves no Ray process behind."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in adapter_dirs["a"].iterdir():
        data = item.read_bytes()
        (broken / item.name).write_bytes(data[: len(data) // 2] if item.suffix == ".safetensors" else data)
    home = tmp_path / "home"
    before = set(descendants())
    command = [sys.executable, "-m", "phi3", "serve", "--ray", MODEL, "-b", "reference", "-p", "fp32"]
    done = subprocess.run(
        [*command, "--adapter", f"x={broken}", "--host", "127.0.0.1", "--port", "0", "--ray-start-timeout", "240"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PHI3_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = [line for line in done.stderr.splitlines() if line.strip()][-2:]
    assert last[0].startswith("Error: the phi3 application failed to deploy on Ray: "), last
    assert "adapter_model.safetensors is truncated" in last[0], last
    assert not list((home / "adapters").glob("*/*")), "a failed conversion left something in the cache"
    started = {pid: name for pid, name in descendants().items() if pid not in before}
    assert not wait_gone(started)
