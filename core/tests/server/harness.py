"""A real ``phi3 serve`` in a subprocess on a free loopback port, and helpers to talk to it.

The server runs exactly as a user starts it (``python -m phi3 serve ...``), with the session's
isolated ``PHI3_HOME``; clients are the official ``openai`` package and raw ``httpx``. Every wait
is bounded in both iterations and seconds, and every server is stopped with SIGINT (Ctrl-C), which
must end it cleanly: exit status 0 and no traceback in its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

API_KEY = "test-key-7c1f"
START_TIMEOUT_S = 300.0


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of one Prometheus sample at ``url/metrics`` over every series whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def wait_until(what: str, check: object, timeout: float, explain: Callable[[], str] | None = None) -> None:
    """Poll ``check()`` every 50 ms until true; bounded in count and time. ``explain`` adds context on time-out."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``phi3 serve ARGS`` on a free port; ``stop()`` sends SIGINT and checks the exit."""

    def __init__(
        self, args: list[str], log_path: Path, api_key: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.api_key = api_key
        self.log_path = log_path
        extra_env = env
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("PHI3_API_KEY", None)
        env.update(extra_env or {})
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "phi3", "serve", *args, "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1)):
            if self.process.poll() is not None:
                raise AssertionError(f"phi3 serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.process.kill()
        raise AssertionError(f"phi3 serve was not ready after {timeout:.0f} s:\n{self.log()}")

    def get(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={**self.headers, **(headers or {})}, timeout=60, **kwargs)

    def post(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers={**self.headers, **(headers or {})}, timeout=120, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of one Prometheus sample over every series whose labels include ``labels``."""
        return metric(self.url, name, **labels)

    def wait_for(self, what: str, check: object, timeout: float = 60.0) -> None:
        """Poll ``check()`` until true; bounded in count and time. On time-out the server's log is shown."""

        def log_tail() -> str:
            return "\n".join(line for line in self.log().splitlines() if "GET /metrics" not in line)[-4000:]

        wait_until(what, check, timeout, explain=log_tail)

    def stop(self, timeout: float = 60.0) -> tuple[int, str]:
        """Ctrl-C, then the exit status and the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
                self._log.close()
                message = f"phi3 serve did not stop within {timeout:.0f} s of SIGINT:\n{self.log()}"
                raise AssertionError(message) from None
        self._log.close()
        return self.process.returncode, self.log()


def assert_clean_exit(server: ServerProcess) -> None:
    code, log = server.stop()
    assert code == 0, f"exit status {code}:\n{log}"
    assert "Traceback" not in log, log
    assert "Application shutdown complete" in log, log
