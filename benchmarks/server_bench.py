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

Writes ``benchmarks/SERVER_RESULTS.md``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import httpx

import phi3

HERE = Path(__file__).resolve().parent
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
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clients = [int(c) for c in args.clients.split(",")]

    local = in_process(args.model, args.backend, args.tokens, args.runs)
    configs: list[tuple[str, list[str]]] = [("one at a time", [])]
    if args.batching > 1:
        configs.append((f"continuous batching, {args.batching}", [f"max_concurrent_generations={args.batching}"]))
    lines = [
        "# phi3 serve benchmark",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, `python benchmarks/server_bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + f"`; model `{args.model}` on `{args.backend}`, {args.tokens} tokens per request (ignore_eos), "
        f"{os.cpu_count()} CPUs.",
        "",
    ]
    overhead_rows: list[str] = []
    load_rows: list[str] = []
    memory_rows: list[str] = []
    for name, options in configs:
        server = Server(args.model, args.backend, options, max_queue=max(clients) + 1)
        try:
            with httpx.Client(timeout=300) as client:
                stream_once(client, server.url, args.model, 4)  # warm-up
                served = [stream_once(client, server.url, args.model, args.tokens) for _ in range(args.runs)]
            if not options:
                ttft_local = statistics.median(s.ttft_s for s in local) * 1000
                ttft_served = statistics.median(s.ttft_s for s in served) * 1000
                rate_local = statistics.median(s.decode_tps for s in local)
                rate_served = statistics.median(s.decode_tps for s in served)
                ttft_engine = median_of(s.engine_ttft_s for s in served)
                rate_engine = median_of(s.engine_tps for s in served)
                overhead_rows.append(
                    f"| {ttft_local:.1f} | {ttft_served:.1f} | {ttft_served - ttft_local:+.1f} "
                    f"| {fmt(ttft_engine, 1000, '.1f')} "
                    f"| {rate_local:.0f} | {rate_served:.0f} | {100 * (rate_served / rate_local - 1):+.1f} % "
                    f"| {fmt(rate_engine, 1, '.0f')} |"
                )
            for count in clients:
                level = load_level(server.url, args.model, count, args.duration, args.tokens)
                ttfts = [s.ttft_s * 1000 for s in level.samples]
                total = sum(s.tokens for s in level.samples)
                load_rows.append(
                    f"| {name} | {count} | {len(level.samples)} | {level.errors} | {pct(ttfts, 0.5):.1f} "
                    f"| {pct(ttfts, 0.99):.1f} | {total / level.seconds:.0f} |"
                )
                print(load_rows[-1], flush=True)
            if not options:
                with httpx.Client(timeout=300) as client:
                    for _ in range(10):
                        stream_once(client, server.url, args.model, 8)
                    after_10 = server.rss_mb()
                    for _ in range(args.requests - 10):
                        stream_once(client, server.url, args.model, 8)
                    after_n = server.rss_mb()
                memory_rows.append(f"| {after_10:.0f} | {after_n:.0f} | {after_n - after_10:+.1f} |")
        finally:
            server.stop()
    gguf = args.llama_gguf or (llama_gguf(args.llama_from, args.workdir) if args.llama_from else None)
    llama_rows: list[str] = []
    if gguf is not None:
        llama = LlamaServer(gguf, args.model, threads=os.cpu_count() or 1, context=max(2048, 4 * args.tokens))
        try:
            with httpx.Client(timeout=300) as client:
                stream_once(client, llama.url, args.model, 4)  # warm-up
                served = [stream_once(client, llama.url, args.model, args.tokens) for _ in range(args.runs)]
            ttft = statistics.median(s.ttft_s for s in served) * 1000
            rate = statistics.median(s.decode_tps for s in served)
            llama_rows.append(f"| llama.cpp server, one request at a time | {ttft:.1f} | {rate:.0f} |")
            for count in clients:
                level = load_level(llama.url, args.model, count, args.duration, args.tokens)
                ttfts = [s.ttft_s * 1000 for s in level.samples]
                total = sum(s.tokens for s in level.samples)
                load_rows.append(
                    f"| llama.cpp server ({gguf.name}) | {count} | {len(level.samples)} | {level.errors} "
                    f"| {pct(ttfts, 0.5):.1f} | {pct(ttfts, 0.99):.1f} | {total / level.seconds:.0f} |"
                )
                print(load_rows[-1], flush=True)
        finally:
            llama.stop()
    lines += [
        "## Server overhead (one request at a time; medians)",
        "",
        "Targets: time to first token <= +10 ms, decode rate <= 3 % slower.",
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
        *overhead_rows,
        "",
        f"## Concurrent streaming clients ({args.duration:.0f} s per level)",
        "",
        "Targets: 0 errors; with continuous batching, 4 clients' aggregate >= 2x one client's.",
        "",
        "| server | clients | requests | errors | p50 TTFT (ms) | p99 TTFT (ms) | aggregate tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *load_rows,
        "",
        f"## Server memory (RSS) after 10 and {args.requests} sequential requests",
        "",
        "Target: < 50 MB growth.",
        "",
        f"| after 10 (MB) | after {args.requests} (MB) | growth (MB) |",
        "| --- | --- | --- |",
        *memory_rows,
        "",
    ]
    if llama_rows:
        lines += [
            f"## llama.cpp's own server on the same model ({gguf.name if gguf else ''}, llama-cpp-python)",
            "",
            "Same requests (chat, streamed, read with httpx); its load levels are in the table above.",
            "",
            "| server | TTFT (ms, median) | decode tok/s (median) |",
            "| --- | --- | --- |",
            *llama_rows,
            "",
        ]
    else:
        lines += ["Not measured in this run: llama.cpp's own server (pass --llama-gguf or --llama-from).", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
