"""Fixtures for the server tests: see :mod:`.harness` for the server process itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server tests need phi3-core[serve] (nox -s server)")
pytest.importorskip("openai", reason="the server tests use the official openai client (nox -s server)")

from .harness import ServerProcess, assert_clean_exit


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
