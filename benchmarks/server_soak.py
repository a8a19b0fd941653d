"""Soak and fault test of ``phi3 serve``: many streaming clients, faults mixed in, SIGTERM under load.

A real server runs in a subprocess on a free 127.0.0.1 port (benchmarks/soak_server.py: the CLI with a
``flaky`` backend, the reference backend on a tiny random Phi-3 built by ``make_tiny_phi3``, fp32). Then:

1. warm-up: one request of each kind, then the RSS baseline;
2. load: ``--clients`` concurrent clients for ``--seconds``, each drawing request kinds at random
   (seeded): streams read to the end, streams the client drops after a few events or before the first
   token, streams and non-streamed requests the backend fails mid-stream (prompt holds the flaky
   backend's marker), bodies over the 4 MiB limit (with and without Content-Length), malformed JSON, a
   wrong content type. Every request has one expected outcome, checked as it ends;
3. after the load: the slots drain (``phi3_active_generations`` and ``phi3_queue_depth`` back to 0), a
   fresh request is served, and the gauges are read again;
4. shutdown: ``--clients`` long requests (streamed and not) in flight, SIGTERM, and the time until every
   response ended and until the process exited.

The server's RSS (psutil) is sampled all along. Raw results go to ``--json``; the markdown report is
rendered from that JSON alone (``render``; ``--render`` re-renders without running)::

    python benchmarks/server_soak.py                       # 16 clients, 60 s -> SERVER_SOAK.json/.md
    python benchmarks/server_soak.py --render              # the report again, from the JSON

The JSON also carries the run's metadata (``benchmarks/reporting.py``: commit, command, CPU model,
versions); a soak checks behaviour, not speed, so a busy machine is recorded (the report says whether
the 1-minute load at the start was above 0.5), not refused.

Every loop is bounded in count and time; every request has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reporting  # noqa: E402

LAUNCHER = HERE / "soak_server.py"
DEFAULT_JSON = HERE / "SERVER_SOAK.json"
DEFAULT_REPORT = HERE / "SERVER_SOAK.md"
FAIL_MARKER = "SOAK-FAIL-MIDSTREAM"  # benchmarks/soak_server.py's marker
BODY_LIMIT = 4 * 1024 * 1024
RSS_LIMIT_MB = 50.0
GRACE_S = 5.0  # uvicorn's timeout_graceful_shutdown in phi3.server.command
REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

KINDS: dict[str, int] = {
    # kind: weight
    "stream_ok": 30,
    "stream_disconnect": 14,
    "stream_disconnect_early": 5,
    "stream_fail": 10,
    "nonstream_ok": 8,
    "nonstream_fail": 8,
    "oversized_length": 3,
    "oversized_chunked": 3,
    "bad_json": 8,
    "wrong_content_type": 8,
}
EXPECTED: dict[str, str] = {
    "stream_ok": "200, stream ends with [DONE]",
    "stream_disconnect": "200, client leaves after 1-4 events (or [DONE] first)",
    "stream_disconnect_early": "client leaves within 0.3 s, before or after the first token",
    "stream_fail": "200, stream ends with an error event (backend_error), no [DONE]",
    "nonstream_ok": "200",
    "nonstream_fail": "500 backend_error (documented)",
    "oversized_length": "413 (Content-Length over 4 MiB)",
    "oversized_chunked": "413 (chunked body over 4 MiB)",
    "bad_json": "400 invalid_json",
    "wrong_content_type": "415",
    "shutdown_stream": "stream ends with [DONE] or error event generation_cancelled; or, still queued, "
    "503 server_shutting_down; or connection refused",
    "shutdown_nonstream": "200, or 503 generation_cancelled / server_shutting_down (documented), or connection refused",
}


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``soak_server.py serve MODEL -b flaky -p fp32 --preload`` on a free 127.0.0.1 port."""

    def __init__(self, model: str, workdir: Path, max_queue: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "serve.log"
        env = {
            **os.environ,
            "PHI3_HOME": str(workdir / "phi3-home"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        env.pop("PHI3_API_KEY", None)
        args = [model, "-b", "flaky", "-p", "fp32", "--preload", "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "serve", *args, "--max-queue", str(max_queue)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float) -> float:
        started = time.monotonic()
        for _ in range(int(timeout / 0.1)):
            if self.process.poll() is not None:
                raise RuntimeError(f"phi3 serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"phi3 serve was not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def close(self) -> None:
        self.kill()
        self._log.close()

    def gauges(self) -> dict[str, float]:
        """Sums over models of the gauges and counters the soak reads from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        wanted = {
            "phi3_active_generations": "active_generations",
            "phi3_queue_depth": "queue_depth",
            "phi3_cancelled_generations_total": "cancelled_generations",
            "phi3_abandoned_requests_total": "abandoned_requests",
            "phi3_loaded_models": "loaded_models",
        }
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        values = dict.fromkeys(wanted.values(), 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    values[wanted[sample.name]] += sample.value
        return values


class RssSampler:
    """The server's RSS (with any children) every ``period`` seconds, in a thread; bounded in count."""

    def __init__(self, pid: int, t0: float, period: float = 0.25, max_samples: int = 20_000) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.t0 = t0
        self.period = period
        self.max_samples = max_samples
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss_mb(self) -> float | None:
        import psutil

        try:
            total = self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                total += child.memory_info().rss
        except psutil.Error:
            return None
        return total / 2**20

    def _run(self) -> None:
        for _ in range(self.max_samples):
            value = self.rss_mb()
            if value is not None:
                self.samples.append((round(time.monotonic() - self.t0, 3), round(value, 2)))
            if self._stop.wait(self.period):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# -- requests ----------------------------------------------------------------------------------


def chat_body(model: str, stream: bool, fail: bool, max_tokens: int, salt: int) -> dict[str, Any]:
    words = f"Soak request {salt}: tell me about AI PCs."
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"{words} {FAIL_MARKER}" if fail else words}],
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }


def oversized_body(model: str) -> bytes:
    filler = "a" * (BODY_LIMIT + 64 * 1024)
    return json.dumps({"model": model, "messages": [{"role": "user", "content": filler}]}).encode()


async def chunked(body: bytes, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


def error_code(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        code = payload["error"].get("code")
        return str(code) if code is not None else None
    return None


async def read_stream(response: httpx.Response, record: dict[str, Any], leave_after: int | None) -> None:
    """Read SSE events into ``record``: ``end`` is done / error / neither / left (the client left)."""
    events = 0
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            record["end"] = "done"
            continue
        events += 1
        record["n"] = events
        payload = json.loads(data)
        if "error" in payload:
            record["end"] = "error"
            record["code"] = error_code(payload)
            continue
        if record.get("end") is not None:  # an event after [DONE] or after an error event
            record["end"] = "event_after_end"
        if leave_after is not None and events >= leave_after:
            record["end"] = "left"
            return
    if record.get("end") is None:
        record["end"] = "neither"


async def one_request(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    kind: str,
    rng: random.Random,
    max_tokens: int,
    salt: int,
    oversized: bytes,
) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind, "status": None, "end": None, "code": None, "n": 0}
    endpoint = f"{url}/v1/chat/completions"
    json_headers = {"Content-Type": "application/json"}
    try:
        if kind in ("stream_ok", "stream_fail", "stream_disconnect", "stream_disconnect_early"):
            body = json.dumps(chat_body(model, True, kind == "stream_fail", max_tokens, salt))
            leave_after = rng.randint(1, 4) if kind == "stream_disconnect" else None

            async def stream() -> None:
                async with client.stream("POST", endpoint, content=body, headers=json_headers) as response:
                    record["status"] = response.status_code
                    if response.status_code != 200:
                        await response.aread()
                        record["code"] = error_code(_json_or_none(response.content))
                        return
                    await read_stream(response, record, leave_after)

            if kind == "stream_disconnect_early":
                try:
                    await asyncio.wait_for(stream(), rng.uniform(0.02, 0.3))
                except TimeoutError:
                    record["end"] = "left"
            else:
                await stream()
        elif kind in ("nonstream_ok", "nonstream_fail"):
            body = json.dumps(chat_body(model, False, kind == "nonstream_fail", max_tokens, salt))
            response = await client.post(endpoint, content=body, headers=json_headers)
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
        elif kind == "oversized_length":
            response = await client.post(endpoint, content=oversized, headers=json_headers)
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
        elif kind == "oversized_chunked":
            response = await client.post(endpoint, content=chunked(oversized), headers=json_headers)
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
        elif kind == "bad_json":
            response = await client.post(endpoint, content=b'{"model": "x", "messages": [', headers=json_headers)
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
        elif kind == "wrong_content_type":
            body = json.dumps(chat_body(model, False, False, max_tokens, salt))
            response = await client.post(endpoint, content=body, headers={"Content-Type": "text/plain"})
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
        else:
            raise ValueError(kind)
    except httpx.TransportError as exc:
        record["transport_error"] = f"{type(exc).__name__}: {exc}"[:200]
        if record["end"] is None and record["status"] == 200:
            record["end"] = "neither"
    return record


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def check(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not the outcome its kind must have; None when it is."""
    kind, status, end, code = record["kind"], record["status"], record["end"], record["code"]
    if "transport_error" in record and kind not in ("shutdown_stream", "shutdown_nonstream"):
        return f"transport error: {record['transport_error']}"
    if kind == "stream_ok":
        return None if status == 200 and end == "done" else f"want 200 + [DONE], got {status} {end}"
    if kind == "stream_fail":
        ok = status == 200 and end == "error" and code == "backend_error"
        return None if ok else f"want 200 + error event backend_error, got {status} {end} {code}"
    if kind == "stream_disconnect":
        return None if status == 200 and end in ("left", "done") else f"want 200 + left, got {status} {end}"
    if kind == "stream_disconnect_early":
        ok = end == "left" or (status == 200 and end == "done")
        return None if ok else f"want left (or [DONE]), got {status} {end}"
    if kind == "nonstream_ok":
        return None if status == 200 else f"want 200, got {status} {code}"
    if kind == "nonstream_fail":
        return None if status == 500 and code == "backend_error" else f"want 500 backend_error, got {status} {code}"
    if kind in ("oversized_length", "oversized_chunked"):
        return None if status == 413 else f"want 413, got {status} {code}"
    if kind == "bad_json":
        return None if status == 400 and code == "invalid_json" else f"want 400 invalid_json, got {status} {code}"
    if kind == "wrong_content_type":
        return None if status == 415 else f"want 415, got {status} {code}"
    refused = "transport_error" in record and "ConnectError" in record["transport_error"] and status is None
    if kind == "shutdown_stream":
        ok = refused or (status == 200 and (end == "done" or (end == "error" and code == "generation_cancelled")))
        ok = ok or (status == 503 and code == SHUTTING_DOWN)
        return None if ok else f"want [DONE], error event generation_cancelled or 503, got {status} {end} {code}"
    if kind == "shutdown_nonstream":
        ok = refused or status == 200 or (status == 503 and code in ("generation_cancelled", SHUTTING_DOWN))
        return None if ok else f"want 200 or 503 generation_cancelled / {SHUTTING_DOWN}, got {status} {code}"
    raise ValueError(kind)


SHUTTING_DOWN = "server_shutting_down"
"""The code of the 503 a request still queued when shutdown begins gets (docs/server.md)."""


def documented_5xx(record: dict[str, Any]) -> bool:
    """A 5xx docs/server.md names: 500 for the failing backend; at shutdown, 503 generation_cancelled
    (cut while decoding) or server_shutting_down (still queued)."""
    kind, status, code = record["kind"], record["status"], record["code"]
    if status == 500 and kind == "nonstream_fail" and code == "backend_error":
        return True
    return status == 503 and kind.startswith("shutdown_") and code in ("generation_cancelled", SHUTTING_DOWN)


async def client_loop(
    index: int,
    url: str,
    model: str,
    deadline: float,
    t0: float,
    seed: int,
    max_tokens: int,
    oversized: bytes,
    max_requests: int,
) -> list[dict[str, Any]]:
    rng = random.Random(seed * 1000 + index)
    kinds, weights = list(KINDS), list(KINDS.values())
    records: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        for number in range(max_requests):
            if time.monotonic() >= deadline:
                break
            kind = rng.choices(kinds, weights)[0]
            started = time.monotonic()
            record = await one_request(client, url, model, kind, rng, max_tokens, index * 100_000 + number, oversized)
            record.update(client=index, t=round(started - t0, 3), s=round(time.monotonic() - started, 3))
            record["failure"] = check(record)
            records.append(record)
    return records


async def run_load(
    url: str, model: str, clients: int, seconds: float, seed: int, max_tokens: int, t0: float
) -> list[dict[str, Any]]:
    oversized = oversized_body(model)
    deadline = time.monotonic() + seconds
    max_requests = int(seconds * 100) + 10  # far above what one client can send; a bound, not a target
    tasks = [
        client_loop(i, url, model, deadline, t0, seed, max_tokens, oversized, max_requests) for i in range(clients)
    ]
    results = await asyncio.wait_for(asyncio.gather(*tasks), seconds + 180)
    return [record for records in results for record in records]


async def run_warmup(url: str, model: str, max_tokens: int, t0: float) -> list[dict[str, Any]]:
    oversized = oversized_body(model)
    rng = random.Random(0)
    records = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        for number, kind in enumerate(k for k in KINDS if k != "stream_disconnect_early"):
            started = time.monotonic()
            record = await one_request(client, url, model, kind, rng, max_tokens, number, oversized)
            record.update(client=-1, t=round(started - t0, 3), s=round(time.monotonic() - started, 3))
            record["failure"] = check(record)
            records.append(record)
    return records


async def shutdown_request(
    client: httpx.AsyncClient, url: str, model: str, stream: bool, salt: int, first_token: asyncio.Event
) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": "shutdown_stream" if stream else "shutdown_nonstream"}
    record.update(status=None, end=None, code=None, n=0)
    body = json.dumps(chat_body(model, stream, False, 100_000, salt) | {"max_tokens": 1800})
    endpoint = f"{url}/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    try:
        if stream:
            async with client.stream("POST", endpoint, content=body, headers=headers) as response:
                record["status"] = response.status_code
                if response.status_code != 200:
                    await response.aread()
                    record["code"] = error_code(_json_or_none(response.content))
                else:
                    first_token.set()  # headers come with the first event
                    await read_stream(response, record, None)
        else:
            response = await client.post(endpoint, content=body, headers=headers)
            record["status"] = response.status_code
            record["code"] = error_code(_json_or_none(response.content))
    except httpx.TransportError as exc:
        record["transport_error"] = f"{type(exc).__name__}: {exc}"[:200]
        if record["end"] is None and record["status"] == 200:
            record["end"] = "neither"
    record["ended"] = time.monotonic()
    return record


async def run_shutdown(server: Server, model: str, clients: int) -> dict[str, Any]:
    """``clients`` long requests in flight (a quarter non-streamed), SIGTERM once one streams, then timings."""
    first_token = asyncio.Event()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        tasks = [
            asyncio.ensure_future(shutdown_request(client, server.url, model, i % 4 != 3, 900_000 + i, first_token))
            for i in range(clients)
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_token.wait(), 60)
        await asyncio.sleep(0.5)
        in_flight = sum(not task.done() for task in tasks)
        sigterm = time.monotonic()
        sigterm_wall = time.strftime("%H:%M:%S", time.localtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        server.process.send_signal(signal.SIGTERM)
        done, pending = await asyncio.wait(tasks, timeout=60)
        for task in pending:
            task.cancel()
        records = [task.result() for task in done]
    exit_code: int | None
    try:
        exit_code = await asyncio.to_thread(server.process.wait, 60)
    except subprocess.TimeoutExpired:
        exit_code = None
    exited = time.monotonic()
    for record in records:
        record["after_sigterm_s"] = round(record.pop("ended") - sigterm, 3)
        record["failure"] = check(record)
    ends = [r["after_sigterm_s"] for r in records]
    return {
        "in_flight_at_sigterm": in_flight,
        "sigterm_at": sigterm_wall,
        "responses_ended_s": round(max(ends), 3) if ends else None,
        "unfinished_after_60_s": len(pending),
        "exit_s": round(exited - sigterm, 3) if exit_code is not None else None,
        "exit_code": exit_code,
        "records": records,
    }


async def fresh_request(url: str, model: str, max_tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        return await one_request(client, url, model, "nonstream_ok", random.Random(1), max_tokens, 777_777, b"")


def wait_drained(server: Server, timeout: float) -> tuple[float | None, dict[str, float]]:
    started = time.monotonic()
    gauges = server.gauges()
    for _ in range(int(timeout / 0.1)):
        if gauges["active_generations"] == 0 and gauges["queue_depth"] == 0:
            return time.monotonic() - started, gauges
        if time.monotonic() - started > timeout:
            break
        time.sleep(0.1)
        gauges = server.gauges()
    return None, gauges


# -- the run -----------------------------------------------------------------------------------


def _config(clients: int, seconds: float, seed: int, max_tokens: int) -> dict[str, Any]:
    return {
        "clients": clients,
        "seconds": seconds,
        "seed": seed,
        "max_tokens": max_tokens,
        "kinds": KINDS,
        "body_limit_bytes": BODY_LIMIT,
        "oversized_body_bytes": BODY_LIMIT + 64 * 1024,
        "server": "benchmarks/soak_server.py serve <tiny make_tiny_phi3 model> -b flaky -p fp32 --preload",
        "max_queue": max(16, 2 * clients),
    }


def _machine(load_before: tuple[float, ...], load_at_sigterm: tuple[float, ...]) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_at_sigterm": [round(x, 2) for x in load_at_sigterm],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def run(
    clients: int = 16,
    seconds: float = 60.0,
    seed: int = 0,
    max_tokens: int = 24,
    workdir: Path | None = None,
    start_timeout: float = 300.0,
) -> dict[str, Any]:
    """The whole soak; returns the raw results (what ``--json`` holds)."""
    from phi3.testing.tiny_model import make_tiny_phi3

    with tempfile.TemporaryDirectory(prefix="phi3-soak-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        model = str(make_tiny_phi3(work / "tiny-phi3", max_position_embeddings=2048))
        server = Server(model, work, max_queue=max(16, 2 * clients))
        try:
            ready_s = server.wait_ready(start_timeout)
            t0 = time.monotonic()
            sampler = RssSampler(server.process.pid, t0)
            rss_start = sampler.rss_mb()
            sampler.start()
            warmup = asyncio.run(run_warmup(server.url, model, max_tokens, t0))
            rss_baseline = sampler.rss_mb()
            load_started = time.monotonic() - t0
            records = asyncio.run(run_load(server.url, model, clients, seconds, seed, max_tokens, t0))
            load_ended = time.monotonic() - t0
            drained_s, gauges_drained = wait_drained(server, 30.0)
            fresh = asyncio.run(fresh_request(server.url, model, max_tokens))
            fresh["failure"] = check(fresh)
            gauges_after = server.gauges()
            rss_after_load = sampler.rss_mb()
            load_at_sigterm = os.getloadavg()
            shutdown = asyncio.run(run_shutdown(server, model, clients))
            sampler.stop()
        finally:
            server.close()
        log = server.log()
    log_lines = log.splitlines()
    suspicious = [line for line in log_lines if "Traceback" in line or " ERROR " in line or "Exception" in line]
    load_samples = [mb for t, mb in sampler.samples if load_started <= t <= load_ended]
    return {
        "config": _config(clients, seconds, seed, max_tokens),
        "machine": _machine(load_before, load_at_sigterm),
        "server_ready_s": round(ready_s, 2),
        "load_window_s": [round(load_started, 3), round(load_ended, 3)],
        "warmup": warmup,
        "load": records,
        "after_load": {
            "drained_s": round(drained_s, 3) if drained_s is not None else None,
            "gauges_drained": gauges_drained,
            "fresh_request": fresh,
            "gauges_after_fresh": gauges_after,
        },
        "rss_mb": {
            "at_start": rss_start,
            "baseline_after_warmup": rss_baseline,
            "peak_during_load": max(load_samples) if load_samples else None,
            "after_load": rss_after_load,
            "samples": sampler.samples,
        },
        "shutdown": shutdown,
        "server_log": {
            "lines": len(log_lines),
            "suspicious_lines": suspicious[:40],
            "tail": log_lines[-15:],
        },
    }


# -- criteria and report -----------------------------------------------------------------------


def all_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [*load_records(data), *data["shutdown"]["records"]]


def load_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The warm-up, the load and the fresh request after it (everything before SIGTERM)."""
    return [*data["warmup"], *data["load"], data["after_load"]["fresh_request"]]


def _undocumented_5xx(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if (r["status"] or 0) >= 500 and not documented_5xx(r)]


def _examples(records: list[dict[str, Any]]) -> str:
    return "; e.g. " + "; ".join(f"{r['kind']}: {r['failure'] or r['status']}" for r in records[:4])


def _load_criteria(data: dict[str, Any], add: Callable[[str, str, bool, str], None]) -> None:
    """Outcomes, 5xx and stream ends under load."""
    examples = _examples
    before = load_records(data)
    failures = [r for r in before if r.get("failure")]
    add(
        "outcomes",
        "load: every request got the outcome its kind must have",
        not failures,
        f"{len(before) - len(failures)} of {len(before)}" + (examples(failures) if failures else ""),
    )
    bad = _undocumented_5xx(before)
    documented = sum(1 for r in before if (r["status"] or 0) >= 500 and documented_5xx(r))
    add(
        "no_5xx",
        "load: zero 5xx other than the documented ones",
        not bad,
        f"{len(bad)} undocumented; {documented} documented (500 backend_error: the failing backend's "
        "non-streamed requests)" + (examples(bad) if bad else ""),
    )
    records = all_records(data)
    streams = [r for r in records if r["status"] == 200 and r["end"] is not None and r["end"] != "left"]
    neither = [r for r in streams if r["end"] not in ("done", "error")]
    add(
        "stream_ends",
        "every stream ended with [DONE] or an error event (load and shutdown)",
        not neither,
        f"{len(streams)} streams read to their end (streams the client left excluded): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(Counter(r["end"] for r in streams).items()))
        + (examples(neither) if neither else ""),
    )


def _after_load_criteria(data: dict[str, Any], add: Callable[[str, str, bool, str], None], rss_limit_mb: float) -> None:
    """No leaked slot, bounded memory."""
    after = data["after_load"]
    gauges = after["gauges_after_fresh"]
    fresh = after["fresh_request"]
    leak_ok = (
        after["drained_s"] is not None
        and fresh["status"] == 200
        and gauges["active_generations"] == 0
        and gauges["queue_depth"] == 0
    )
    add(
        "no_leak",
        "no leaked generation slot",
        leak_ok,
        f"gauges 0/0 within {after['drained_s']} s of the load's end; fresh request: {fresh['status']}; then "
        f"phi3_active_generations {gauges['active_generations']:g}, phi3_queue_depth {gauges['queue_depth']:g}",
    )
    rss = data["rss_mb"]
    if rss["peak_during_load"] is not None and rss["baseline_after_warmup"] is not None:
        growth = max(rss["peak_during_load"], rss["after_load"] or 0) - rss["baseline_after_warmup"]
        add(
            "rss",
            f"server RSS growth under {rss_limit_mb:g} MB",
            growth < rss_limit_mb,
            f"{growth:+.1f} MB (peak or end minus baseline): baseline after warm-up "
            f"{rss['baseline_after_warmup']:.1f} MB, peak during load {rss['peak_during_load']:.1f} MB, "
            f"after load {rss['after_load']:.1f} MB",
        )
    else:
        add("rss", f"server RSS growth under {rss_limit_mb:g} MB", False, "no RSS samples")


def _shutdown_criteria(data: dict[str, Any], add: Callable[[str, str, bool, str], None]) -> None:
    """What SIGTERM under load does."""
    examples = _examples
    shutdown = data["shutdown"]
    cut = [r for r in shutdown["records"] if r.get("failure")]
    add(
        "shutdown_outcomes",
        "shutdown: every in-flight request ended as documented (decoding: [DONE] or error event "
        "generation_cancelled, non-streamed 200 or 503 generation_cancelled; still queued: 503 "
        "server_shutting_down)",
        not cut and shutdown["unfinished_after_60_s"] == 0,
        f"{len(shutdown['records']) - len(cut)} of {len(shutdown['records'])}; "
        f"{len(_undocumented_5xx(shutdown['records']))} undocumented 5xx" + (examples(cut) if cut else ""),
    )
    ended, exit_s = shutdown["responses_ended_s"], shutdown["exit_s"]
    add(
        "shutdown_time",
        f"shutdown: responses ended and the process exited within uvicorn's {GRACE_S:g} s grace period",
        ended is not None and ended <= GRACE_S and exit_s is not None and exit_s <= GRACE_S,
        f"SIGTERM with {shutdown['in_flight_at_sigterm']} requests in flight: the last response ended {ended} s "
        f"after it, the process exited {exit_s} s after it",
    )
    add(
        "exit_status",
        "shutdown: exit status 0 (docs/server.md, Lifecycle)",
        shutdown["exit_code"] == 0,
        f"exit status {shutdown['exit_code']}",
    )


def criteria(data: dict[str, Any], rss_limit_mb: float = RSS_LIMIT_MB) -> list[dict[str, Any]]:
    """Each pass/fail criterion (``key``, ``name``, ``passed``, ``detail``), from the raw results alone."""
    out: list[dict[str, Any]] = []

    def add(key: str, name: str, passed: bool, detail: str) -> None:
        out.append({"key": key, "name": name, "passed": bool(passed), "detail": detail})

    _load_criteria(data, add)
    _after_load_criteria(data, add, rss_limit_mb)
    _shutdown_criteria(data, add)
    return out


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _command(config: dict[str, Any]) -> str:
    return f"python benchmarks/server_soak.py --clients {config['clients']} --seconds {config['seconds']:g}"


def _machine_state(machine: dict[str, Any]) -> str:
    if reporting.is_quiet(machine["loadavg_before"]):
        return f"Quiet (1-minute load at the start <= {reporting.QUIET_LOAD})"
    return f"Shared with other jobs (1-minute load at the start > {reporting.QUIET_LOAD})"


def _outcome_lines(records: list[dict[str, Any]]) -> list[str]:
    """Requests by kind and outcome, then by HTTP status."""
    lines: list[str] = []
    by_kind: dict[str, Counter[str]] = {}
    for record in records:
        outcome = f"{record['status']}" + (f" {record['end']}" if record["end"] else "")
        outcome += f" ({record['code']})" if record["code"] else ""
        if "transport_error" in record:
            outcome += f" [{record['transport_error'].split(':')[0]}]"
        by_kind.setdefault(record["kind"], Counter())[outcome] += 1
    rows = []
    for kind, outcomes in by_kind.items():
        bad = sum(1 for r in records if r["kind"] == kind and r.get("failure"))
        summary = ", ".join(f"{outcome}: {count}" for outcome, count in outcomes.most_common())
        rows.append([kind, EXPECTED[kind], sum(outcomes.values()), summary, bad])
    lines += _table(["kind", "must get", "requests", "got (status, stream end, code): count", "unexpected"], rows)
    lines += [
        "",
        "Stream ends: `done` = `data: [DONE]`; `error` = an error event and no `[DONE]`; `left` = the client "
        "closed the connection; `neither` = the stream ended with neither (a failure). Rows include the warm-up "
        "(one request per kind), the fresh request after the load and the shutdown phase.",
        "",
        "## Requests by HTTP status",
        "",
    ]
    statuses = Counter(str(r["status"]) for r in records)
    lines += _table(["status", "requests"], [[s, n] for s, n in sorted(statuses.items())])
    lines += ["", "## Latency in the load window (seconds, request start to end)", ""]
    return lines


def _latency_lines(load: list[dict[str, Any]]) -> list[str]:
    """p50/p95/max duration per kind in the load window."""
    lines: list[str] = []
    rows = []
    for kind in KINDS:
        durations = sorted(r["s"] for r in load if r["kind"] == kind)
        if durations:
            rows.append(
                [
                    kind,
                    len(durations),
                    durations[len(durations) // 2],
                    durations[int(len(durations) * 0.95)],
                    durations[-1],
                ]
            )
    lines += _table(["kind", "n", "p50", "p95", "max"], rows)
    return lines


def _after_lines(data: dict[str, Any]) -> list[str]:
    """Drain, memory, shutdown and the server log."""
    lines: list[str] = []
    after, rss, shutdown = data["after_load"], data["rss_mb"], data["shutdown"]
    lines += [
        "",
        "## After the load",
        "",
        f"- Gauges back to 0 after {after['drained_s']} s: {after['gauges_drained']}.",
        f"- Fresh request: {after['fresh_request']['status']}; gauges then: {after['gauges_after_fresh']}.",
        "",
        "## Server memory (RSS, psutil, every 0.25 s)",
        "",
        f"At start {rss['at_start']:.1f} MB, after warm-up {rss['baseline_after_warmup']:.1f} MB (baseline), "
        f"peak during the load {rss['peak_during_load']:.1f} MB, after the load {rss['after_load']:.1f} MB "
        f"({len(rss['samples'])} samples).",
        "",
        "## Shutdown under load (SIGTERM)",
        "",
        f"- In flight at SIGTERM: {shutdown['in_flight_at_sigterm']} requests "
        f"(one decoding, the others queued; a quarter non-streamed).",
        f"- Every response ended {shutdown['responses_ended_s']} s after SIGTERM; the process exited "
        f"{shutdown['exit_s']} s after it, status {shutdown['exit_code']} (bound: uvicorn's {GRACE_S:g} s grace "
        "period; the server cancels in-flight generations as shutdown begins).",
        "",
        "## Server log",
        "",
        f"{data['server_log']['lines']} lines; lines with Traceback/ERROR/Exception: "
        f"{len(data['server_log']['suspicious_lines'])}.",
    ]
    if data["server_log"]["suspicious_lines"]:
        lines += ["", "```", *data["server_log"]["suspicious_lines"][:10], "```"]
    return lines


def render(data: dict[str, Any], json_name: str = DEFAULT_JSON.name) -> str:
    """The markdown report, from the raw results alone."""
    config, machine, run = data["config"], data["machine"], data.get("run", {})
    results = criteria(data)
    passed = all(c["passed"] for c in results)
    records = all_records(data)
    load = data["load"]
    span = data["load_window_s"][1] - data["load_window_s"][0]
    lines = [
        "# phi3 serve under faults: soak report",
        "",
        f"Rendered by `benchmarks/server_soak.py` from [{json_name}]({json_name}) (raw results); do not edit by hand.",
        f"Re-render: `python benchmarks/server_soak.py --render`. Run: "
        f"`{data.get('run', {}).get('command') or _command(config)}`.",
        "",
        f"- Server: `{config['server']}` on 127.0.0.1, `--max-queue {config['max_queue']}`; one generation slot "
        "(the reference backend declares 1).",
        f"- Load: {config['clients']} concurrent clients for {config['seconds']:g} s (seed {config['seed']}), "
        f"then SIGTERM with {config['clients']} long requests in flight.",
        f"- Machine: {machine['platform']}, {run.get('cpu_model') or 'CPU model unknown'}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, {machine['date']}, commit `{run.get('commit') or 'unknown'}`. "
        f"{_machine_state(machine)}: load average (1/5/15 min) {machine['loadavg_before']} before, "
        f"{machine['loadavg_at_sigterm']} at SIGTERM, {machine['loadavg_after']} after.",
        "",
        f"## Verdict: {'PASS' if passed else 'FAIL'}",
        "",
    ]
    lines += _table(
        ["criterion", "result", "measured"],
        [[c["name"], "pass" if c["passed"] else "**FAIL**", c["detail"]] for c in results],
    )
    lines += [
        "",
        f"## Requests by kind and outcome ({len(load)} in the {span:.1f} s load window, "
        f"{len(load) / span if span else 0:.1f}/s)",
        "",
    ]
    lines += _outcome_lines(records)
    lines += _latency_lines(load)
    lines += _after_lines(data)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="raw results (written, or read)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="the rendered markdown")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model and server log here")
    parser.add_argument("--render", "--render-only", action="store_true", help="render --json into --report only")
    args = parser.parse_args(argv)
    if not args.render:
        meta = reporting.run_metadata("server_soak.py", argv, reporting.load_average())
        data = run(args.clients, args.seconds, args.seed, args.max_tokens, args.workdir)
        data["run"] = reporting.finish(meta)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    data = json.loads(args.json.read_text())
    args.report.write_text(render(data, args.json.name))
    for criterion in criteria(data):
        print(f"{'pass' if criterion['passed'] else 'FAIL'}  {criterion['name']}: {criterion['detail']}")
    return 0 if all(c["passed"] for c in criteria(data)) else 1


if __name__ == "__main__":
    sys.exit(main())
