#!/usr/bin/env python3
"""``phi3 serve`` under load: server overhead against in-process phi3, and concurrent streaming clients.

    python benchmarks/server_bench.py                                   # smoke on openvino, 60 s per level
    python benchmarks/server_bench.py --duration 20 --clients 1,4 --batching 4 --model ./my-artifact

Measures, on the same artifact:

1. overhead: time to first token and decode rate in process (``Model.stream``) against the same
   request through the server (an SSE stream read with httpx), one request at a time;
2. load: 1, 4 and 16 clients streaming back to back for ``--duration`` seconds each: errors, p50/p99
   time to first token, aggregate tokens/s; once with one generation at a time, once with
   ``-O max_concurrent_generations=N`` (continuous batching) when ``--batching N`` is given;
3. memory: the server's resident set after 10 and after ``--requests`` sequential requests;
4. with ``--llama-gguf FILE`` (or ``--llama-from CHECKPOINT``, converted to Q4_0 with llama.cpp's own
   converter as ``benchmarks/run.py`` does): the same requests and load levels against llama.cpp's
   server (``python -m llama_cpp.server``, llama-cpp-python) on the same model, side by side.

Writes the raw results (every sample, plus the run's metadata: commit, command, CPU, versions, load
average at the start and the end) to ``benchmarks/SERVER_RESULTS.json`` and renders
``benchmarks/SERVER_RESULTS.md`` from that JSON alone (``--render`` re-creates it); verdicts against
the targets are computed there from the numbers, and speed verdicts are withheld on a noisy run. A
run refuses to start above 1-minute load average 0.5 unless ``--noisy``. Speed is measured here,
never asserted in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reporting  # noqa: E402

TTFT_TARGET_MS = 10.0
DECODE_TARGET = 0.03
BATCHING_TARGET = 2.0
MEMORY_TARGET_MB = 50.0
PROMPT = [{"role": "user", "content": "Tell me about AI PCs."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[str], url: str, name: str, seconds: float = 600) -> None:
    """Poll ``url`` until it answers 200; a server that exits or never answers ends the benchmark."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not start within {seconds:.0f} s")


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on a GGUF file, on a free loopback port."""

    def __init__(self, gguf: Path, alias: str, threads: int, context: int = 2048) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--model", str(gguf), "--model_alias", alias, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--n_ctx", str(context), "--n_threads", str(threads), "--verbose", "False"]
        # its default cancels the running completion when another request arrives; queue instead, as phi3 does
        args += ["--interrupt_requests", "False"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_ready(self.process, f"{self.url}/v1/models", "llama_cpp.server")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def llama_gguf(checkpoint: Path, workdir: Path) -> Path:
    """Q4_0 GGUF of ``checkpoint`` made as benchmarks/run.py makes it (llama.cpp's converter + quantizer)."""
    sys.path.insert(0, str(HERE))
    import run as bench_run  # benchmarks/run.py

    return bench_run.build_gguf(checkpoint, workdir, dict(os.environ))["q4_0"]


class Server:
    def __init__(self, model: str, backend: str, options: list[str], max_queue: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [model, "-b", backend, "--preload", "--max-queue", str(max_queue), "--log-level", "warning"]
        for option in options:
            args += ["-O", option]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "phi3", "serve", *args, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_ready(self.process, f"{self.url}/health", "phi3 serve")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)


@dataclass
class Sample:
    ttft_s: float
    tokens: int
    decode_tps: float
    engine_ttft_s: float | None = None
    """The server's own ``timings`` (phi3 serve and llama.cpp's server send them): what its engine
    measured, so the client-side figures can be split into engine time and HTTP/SSE overhead."""
    engine_tps: float | None = None


@dataclass
class Load:
    clients: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


def stream_once(client: httpx.Client, url: str, model: str, tokens: int) -> Sample:
    body = {
        "model": model,
        "messages": PROMPT,
        "max_tokens": tokens,
        "stream": True,
        "ignore_eos": True,
        # greedy, as in_process decodes: an OpenAI request samples at temperature 1 by default, and a
        # random-weight model's samples can be tokens that decode to no text at all
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = last = None
    usage = 0
    timings: dict[str, float] = {}
    pieces = 0  # content events: the token count when a server sends no usage (llama-cpp-python's doesn't)
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            if event.get("usage"):
                usage = event["usage"]["completion_tokens"]
            if event.get("timings"):
                timings = event["timings"]
            if event.get("choices") and event["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    if first is None or last is None:
        raise RuntimeError("no content streamed")
    usage = usage or pieces
    rate = (usage - 1) / (last - first) if usage > 1 and last > first else 0.0
    engine_ttft = timings["prompt_ms"] / 1000 if "prompt_ms" in timings else None
    return Sample(first - start, usage, rate, engine_ttft, timings.get("predicted_per_second"))


def in_process(model: str, backend: str, tokens: int, runs: int) -> list[Sample]:
    import phi3

    loaded = phi3.load(model, backend=backend)
    try:
        loaded.chat(PROMPT, max_new_tokens=4)  # warm-up
        samples = []
        for _ in range(runs):
            # timed as a caller of the API sees it, like the server's client: from the call (chat
            # template rendering included) to the first piece; the engine's own figure beside it
            start = time.perf_counter()
            stream = loaded.chat_stream(PROMPT, max_new_tokens=tokens, ignore_eos=True)
            first = None
            for _piece in stream:
                first = first or time.perf_counter()
            result = stream.result
            samples.append(
                Sample(
                    (first or time.perf_counter()) - start,
                    result.new_tokens,
                    result.decode_tokens_per_s,
                    result.time_to_first_token_s,
                    result.decode_tokens_per_s,
                )
            )
        return samples
    finally:
        loaded.close()


def load_level(url: str, model: str, clients: int, seconds: float, tokens: int) -> Load:
    level = Load(clients)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop() -> None:
        with httpx.Client(timeout=300) as client:
            while time.monotonic() < stop_at:
                try:
                    sample = stream_once(client, url, model, tokens)
                except Exception:
                    with lock:
                        level.errors += 1
                    continue
                with lock:
                    level.samples.append(sample)

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.seconds = time.monotonic() - started
    return level


def median_of(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, scale: float, spec: str) -> str:
    return "n/a" if value is None else format(value * scale, spec)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def level_record(name: str, level: Load) -> dict[str, Any]:
    """One load level's raw numbers: every request's TTFT and tokens, errors, seconds."""
    return {
        "server": name,
        "clients": level.clients,
        "seconds": level.seconds,
        "errors": level.errors,
        "ttft_ms": [s.ttft_s * 1000 for s in level.samples],
        "tokens": [s.tokens for s in level.samples],
    }


def measure_levels(url: str, name: str, args: argparse.Namespace, clients: list[int]) -> list[dict[str, Any]]:
    levels = []
    for count in clients:
        levels.append(level_record(name, load_level(url, args.model, count, args.duration, args.tokens)))
        print(f"{name}, {count} clients: {len(levels[-1]['tokens'])} requests", flush=True)
    return levels


def sequential(url: str, model: str, tokens: int, runs: int) -> list[dict[str, Any]]:
    """A warm-up, then ``runs`` requests one at a time."""
    with httpx.Client(timeout=300) as client:
        # warm-up at full length: a random-weight model's first few tokens can all be held back as
        # incomplete UTF-8, and a request that streams no text is an error
        stream_once(client, url, model, tokens)
        return [dataclasses.asdict(stream_once(client, url, model, tokens)) for _ in range(runs)]


def memory(server: Server, model: str, requests: int) -> dict[str, float]:
    """The server's RSS after 10 and after ``requests`` sequential short requests."""
    with httpx.Client(timeout=300) as client:
        for _ in range(10):
            stream_once(client, server.url, model, 8)
        after_10 = server.rss_mb()
        for _ in range(requests - 10):
            stream_once(client, server.url, model, 8)
        return {"after_10_mb": after_10, "after_n_mb": server.rss_mb()}


def measure_phi3(args: argparse.Namespace, clients: list[int]) -> dict[str, Any]:
    """In process, then ``phi3 serve`` one at a time (overhead, load, memory) and with batching (load)."""
    out: dict[str, Any] = {
        "in_process": [dataclasses.asdict(s) for s in in_process(args.model, args.backend, args.tokens, args.runs)]
    }
    configs: list[tuple[str, list[str]]] = [("one at a time", [])]
    if args.batching > 1:
        configs.append((f"continuous batching, {args.batching}", [f"max_concurrent_generations={args.batching}"]))
    out["levels"] = []
    for name, options in configs:
        server = Server(args.model, args.backend, options, max_queue=max(clients) + 1)
        try:
            if not options:
                out["served"] = sequential(server.url, args.model, args.tokens, args.runs)
            out["levels"] += measure_levels(server.url, name, args, clients)
            if not options:
                out["memory"] = memory(server, args.model, args.requests)
        finally:
            server.stop()
    return out


def measure_llama(args: argparse.Namespace, clients: list[int]) -> dict[str, Any] | None:
    """llama.cpp's own server on the same model: one at a time, then the same load levels."""
    gguf = args.llama_gguf or (llama_gguf(args.llama_from, args.workdir) if args.llama_from else None)
    if gguf is None:
        return None
    llama = LlamaServer(gguf, args.model, threads=os.cpu_count() or 1, context=max(2048, 4 * args.tokens))
    try:
        served = sequential(llama.url, args.model, args.tokens, args.runs)
        levels = measure_levels(llama.url, f"llama.cpp server ({gguf.name})", args, clients)
    finally:
        llama.stop()
    return {"gguf": gguf.name, "served": served, "levels": levels}


def _median(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> float | None:
    value = median_of(s[key] for s in samples)
    return None if value is None else value * scale


def _verdict(met: bool, quiet: bool = True) -> str:
    return ("met" if met else "missed") if quiet else "no verdict (noisy run)"


def render_overhead(results: dict[str, Any], quiet: bool) -> list[str]:
    local, served = results["in_process"], results["served"]
    ttft_local, ttft_served = _median(local, "ttft_s", 1000), _median(served, "ttft_s", 1000)
    rate_local, rate_served = _median(local, "decode_tps"), _median(served, "decode_tps")
    assert ttft_local is not None and ttft_served is not None and rate_local and rate_served is not None
    slower = 1 - rate_served / rate_local
    ttft_verdict = _verdict(ttft_served - ttft_local <= TTFT_TARGET_MS, quiet)
    return [
        "## Server overhead (one request at a time; medians)",
        "",
        f"Targets: time to first token <= +{TTFT_TARGET_MS:.0f} ms: **{ttft_verdict}**; "
        f"decode rate <= {100 * DECODE_TARGET:.0f} % slower: **{_verdict(slower <= DECODE_TARGET, quiet)}**.",
        "",
        "TTFT in process is timed as an API caller sees it: from `Model.chat_stream()` (chat template "
        "rendering included, as in the server's request path) to the first piece. "
        "The server's own `timings` (its engine's figures, sent with usage) split the difference: TTFT "
        "in the server's engine vs via server is HTTP + SSE + scheduling; decode tok/s in the server's engine "
        "vs in process is what serving costs the engine itself (client-side decode is biased when several "
        "tokens arrive in one SSE read).",
        "",
        "| TTFT in process (ms) | TTFT via server (ms) | difference | TTFT in server's engine (ms) "
        "| decode tok/s in process | decode tok/s via server | difference | decode tok/s in server's engine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {ttft_local:.1f} | {ttft_served:.1f} | {ttft_served - ttft_local:+.1f} "
        f"| {fmt(_median(served, 'engine_ttft_s'), 1000, '.1f')} "
        f"| {rate_local:.0f} | {rate_served:.0f} | {100 * (rate_served / rate_local - 1):+.1f} % "
        f"| {fmt(_median(served, 'engine_tps'), 1, '.0f')} |",
        "",
    ]


def _aggregate(level: dict[str, Any]) -> float:
    return sum(level["tokens"]) / level["seconds"] if level["seconds"] else 0.0


def _batching_verdict(levels: list[dict[str, Any]], quiet: bool) -> str:
    batched = {lv["clients"]: _aggregate(lv) for lv in levels if lv["server"].startswith("continuous batching")}
    if 1 not in batched or 4 not in batched:
        return "not measured (needs --batching and levels 1 and 4)"
    return f"x{batched[4] / batched[1]:.2f}, **{_verdict(batched[4] >= BATCHING_TARGET * batched[1], quiet)}**"


def render_load(results: dict[str, Any], quiet: bool) -> list[str]:
    levels = results["levels"] + (results["llama"]["levels"] if results.get("llama") else [])
    errors = sum(level["errors"] for level in levels)
    lines = [
        f"## Concurrent streaming clients ({results['duration']:.0f} s per level)",
        "",
        f"Targets: 0 errors: {errors} errors, **{_verdict(errors == 0)}**; with continuous batching, 4 clients' "
        f"aggregate >= {BATCHING_TARGET:.0f}x one client's: {_batching_verdict(results['levels'], quiet)}.",
        "",
        "| server | clients | requests | errors | p50 TTFT (ms) | p99 TTFT (ms) | aggregate tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level in levels:
        lines.append(
            f"| {level['server']} | {level['clients']} | {len(level['tokens'])} | {level['errors']} "
            f"| {pct(level['ttft_ms'], 0.5):.1f} | {pct(level['ttft_ms'], 0.99):.1f} | {_aggregate(level):.0f} |"
        )
    return [*lines, ""]


def render_memory(results: dict[str, Any]) -> list[str]:
    mem, n = results["memory"], results["requests"]
    growth = mem["after_n_mb"] - mem["after_10_mb"]
    return [
        f"## Server memory (RSS) after 10 and {n} sequential requests",
        "",
        f"Target: < {MEMORY_TARGET_MB:.0f} MB growth: **{_verdict(growth < MEMORY_TARGET_MB)}**.",
        "",
        f"| after 10 (MB) | after {n} (MB) | growth (MB) |",
        "| --- | --- | --- |",
        f"| {mem['after_10_mb']:.0f} | {mem['after_n_mb']:.0f} | {growth:+.1f} |",
        "",
    ]


def render_llama(results: dict[str, Any]) -> list[str]:
    llama = results.get("llama")
    if not llama:
        return ["Not measured in this run: llama.cpp's own server (pass --llama-gguf or --llama-from).", ""]
    ttft, rate = _median(llama["served"], "ttft_s", 1000), _median(llama["served"], "decode_tps")
    return [
        f"## llama.cpp's own server on the same model ({llama['gguf']}, llama-cpp-python)",
        "",
        "Same requests (chat, streamed, read with httpx); its load levels are in the table above.",
        "",
        "| server | TTFT (ms, median) | decode tok/s (median) |",
        "| --- | --- | --- |",
        f"| llama.cpp server, one request at a time | {fmt(ttft, 1, '.1f')} | {fmt(rate, 1, '.0f')} |",
        "",
    ]


def render(results: dict[str, Any]) -> str:
    quiet = reporting.is_quiet(results["load_average"]["start"])
    lines = [
        "# phi3 serve benchmark",
        "",
        "Rendered by `python benchmarks/server_bench.py --render` from `SERVER_RESULTS.json`; do not edit.",
        "",
        reporting.provenance(results, "server_bench.py"),
        "",
        f"Model `{results['model']}` on `{results['backend']}`, {results['tokens']} tokens per request (ignore_eos). "
        "Speed targets get a verdict only on a quiet run.",
        "",
        *render_overhead(results, quiet),
        *render_load(results, quiet),
        *render_memory(results),
        *render_llama(results),
        reporting.versions_line(results),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smoke")
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--runs", type=int, default=5, help="requests per overhead measurement")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per concurrency level")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--batching", type=int, default=0, help="also run with max_concurrent_generations=N")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests for the memory check")
    parser.add_argument("--out", type=Path, default=HERE / "SERVER_RESULTS.md")
    parser.add_argument("--llama-gguf", type=Path, default=None, help="also load-test llama.cpp's server on it")
    parser.add_argument(
        "--llama-from", type=Path, default=None, help="checkpoint to convert to Q4_0 GGUF for llama.cpp's server"
    )
    parser.add_argument("--workdir", type=Path, default=HERE / ".work", help="where --llama-from writes the GGUF")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.out, render)
        return 0
    meta = reporting.run_metadata("server_bench.py", argv, reporting.refuse_if_noisy(args.noisy))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clients = [int(c) for c in args.clients.split(",")]
    settings = ("model", "backend", "tokens", "runs", "duration", "requests", "batching")
    results = {**meta, **{name: getattr(args, name) for name in settings}, "clients": clients}
    results.update(measure_phi3(args, clients))
    results["llama"] = measure_llama(args, clients)
    reporting.finish(results)
    reporting.write(args.out, results, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
