"""A short run of the server soak (benchmarks/server_soak.py): 4 clients for 6 s against a real
``phi3 serve`` subprocess on 127.0.0.1 (the ``flaky`` backend of benchmarks/soak_server.py on a tiny
Phi-3), with disconnects, 413/400/415 bodies and a backend failing mid-stream mixed in, then SIGTERM
under load. One run per module; each criterion of the full soak's report is one test, from the raw
results the script returns.

The shutdown criteria caught a bug the first soak found: requests still queued when shutdown began
were not turned away (a 500 at uvicorn's grace timeout, or a stream cut with neither [DONE] nor an
error event), and SIGTERM exited -15.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("psutil", reason="the soak samples the server's RSS with psutil (nox -s server)")

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "server_soak.py"
CLIENTS = 4
SECONDS = 6.0
RSS_LIMIT_MB = 100.0
"""Looser than the full soak's 50 MB: 6 s of load shows no trend, only the allocator's first growth
under concurrent requests; the 60 s soak (benchmarks/SERVER_SOAK.md) holds the 50 MB bound."""


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("phi3_bench_server_soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    soak = _script()
    data = soak.run(clients=CLIENTS, seconds=SECONDS, workdir=tmp_path_factory.mktemp("soak"))
    assert soak.render(data).startswith("# phi3 serve under faults")
    assert data["load"], "the load sent no request"
    kinds = {record["kind"] for record in data["load"]} | {record["kind"] for record in data["warmup"]}
    assert {"stream_fail", "nonstream_fail", "oversized_length", "bad_json", "wrong_content_type"} <= kinds
    return {c["key"]: c for c in soak.criteria(data, rss_limit_mb=RSS_LIMIT_MB)}


@pytest.mark.parametrize("key", ["outcomes", "no_5xx", "no_leak", "rss"])
def test_load_criterion(verdicts: dict[str, dict[str, Any]], key: str) -> None:
    criterion = verdicts[key]
    assert criterion["passed"], f"{criterion['name']}: {criterion['detail']}"


@pytest.mark.parametrize("key", ["stream_ends", "shutdown_outcomes", "shutdown_time", "exit_status"])
def test_shutdown_criterion(verdicts: dict[str, dict[str, Any]], key: str) -> None:
    criterion = verdicts[key]
    assert criterion["passed"], f"{criterion['name']}: {criterion['detail']}"
