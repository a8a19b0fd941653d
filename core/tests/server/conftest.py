"""Fixtures for the server tests: see :mod:`.harness` for the server process itself."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server tests need phi3-core[serve] (nox -s server)")
pytest.importorskip("openai", reason="the server tests use the official openai client (nox -s server)")

from .harness import ServerProcess, assert_clean_exit, free_port


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two discriminating LoRA adapters of the smoke model (peft): ``a`` on every module, ``b`` on two."""
    from phi3 import smoke
    from phi3.testing.adapters import make_lora_adapter

    root = tmp_path_factory.mktemp("adapters")
    base = smoke.checkpoint()
    return {
        "a": make_lora_adapter(base, root / "a", rank=8, seed=1),
        "b": make_lora_adapter(base, root / "b", rank=4, seed=2, targets=("qkv_proj", "down_proj")),
    }


def in_process_adapter_answers(adapter_dirs: dict[str, Path], prompt: str, tokens: int) -> dict[str | None, str]:
    """The smoke model's answers per adapter in this process (None: the base), on core's reference
    backend, each adapter's ids checked against transformers + peft merged, all answers distinct:
    what a server's answers for ``smoke``/``smoke:NAME`` must equal."""
    import phi3
    from phi3 import smoke
    from phi3.testing import reference_backend
    from phi3.testing.adapters import reference_adapter_ids
    from phi3.testing.reference import encode_prompt

    phi3.plugins.reset_registry()
    registry = phi3.plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    model = phi3.load("smoke", backend="reference", precision="fp32", adapters=dict(adapter_dirs))
    try:
        answers: dict[str | None, str] = {}
        for name in (None, *adapter_dirs):
            result = model.generate(prompt, max_new_tokens=tokens, ignore_eos=True, adapter=name)
            answers[name] = result.text
            if name is not None:
                prompt_ids = encode_prompt(smoke.checkpoint(), prompt)
                want = reference_adapter_ids(smoke.checkpoint(), adapter_dirs[name], prompt_ids, tokens)
                assert list(result.token_ids) == want, f"adapter {name}: phi3 != transformers + peft merged"
    finally:
        model.close()
    assert len(set(answers.values())) == len(answers), f"the adapters do not change the answer: {answers}"
    return answers


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, phi3_home: Path) -> Iterator[object]:
    """A factory: ``start_server(args, api_key=None)``; every server is Ctrl-C'd at module end."""
    started: list[ServerProcess] = []

    def start(args: list[str], api_key: str | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        full = [*args, "--api-key", api_key] if api_key else args
        server = ServerProcess(full, log, api_key, env)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    failures: list[str] = []
    for server in started:  # every server is stopped, even when an earlier one failed its check
        if server.process.poll() is None:
            try:
                assert_clean_exit(server)
            except AssertionError as exc:
                failures.append(str(exc))
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)
    assert not failures, "\n\n".join(failures)


@contextlib.contextmanager
def in_process_server(plugin: Any, max_queue: int = 16) -> Iterator[str]:
    """phi3's app on a real uvicorn server in this process (a free loopback port), serving the smoke
    model on ``plugin`` registered as backend ``declaring``; yields the server's root URL."""
    import uvicorn

    import phi3
    from phi3.server.app import ServerSettings, create_app
    from phi3.server.model_spec import Defaults

    phi3.plugins.get_registry().register(plugin, "declaring")
    settings = ServerSettings(models=("smoke",), defaults=Defaults(backend="declaring", precision="fp32"))
    app = create_app(dataclasses.replace(settings, max_queue=max_queue))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="declaring-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    for _ in range(1200):
        if server.started or time.monotonic() > deadline or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 60 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive()


@pytest.fixture
def declaring_server() -> Iterator[tuple[str, Any]]:
    """A backend that declares no structured output (``declaring_backend``) behind an in-process
    server, so a test can count that a refused request never generated. Yields the ``/v1`` base
    URL and the plugin."""
    from declaring_backend import Declaring

    plugin = Declaring(())
    with in_process_server(plugin) as url:
        yield f"{url}/v1", plugin
