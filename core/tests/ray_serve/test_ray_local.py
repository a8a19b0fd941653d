"""``phi3 serve --ray`` as the README runs it: no cluster given, so it starts (and stops) its own."""

from __future__ import annotations

import openai
import pytest

from .conftest import descendants, wait_gone
from .test_ray_cluster import MODEL, start, stop_cleanly


def test_own_local_cluster_serves_and_leaves_no_process_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    before = set(descendants())
    log = tmp_path_factory.mktemp("serve-ray-local") / "serve.log"
    server = start(["--ray", MODEL, "-b", "reference", "-p", "fp32", "--replica-cpus", "0.5"], log)
    started = {pid: name for pid, name in descendants().items() if pid not in before}
    assert any("raylet" in name for name in started.values()), started
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    stream = client.completions.create(model=MODEL, temperature=0, prompt="hello", max_tokens=3, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    stop_cleanly(server)
    left = wait_gone(started)
    assert not left, f"Ray processes still running after phi3 serve --ray stopped: {left}"


def test_a_model_no_replica_can_load_is_one_line_and_exit_1(tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    before = set(descendants())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "phi3",
            "serve",
            "--ray",
            "no-such-model",
            "-b",
            "reference",
            "-p",
            "fp32",
            "--port",
            "0",
            "--ray-start-timeout",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = [line for line in done.stderr.splitlines() if line.strip()][-2:]
    assert last[0].startswith("Error: the phi3 application failed to deploy on Ray: 'no-such-model' is neither"), last
    started = {pid: name for pid, name in descendants().items() if pid not in before}
    assert not wait_gone(started)
