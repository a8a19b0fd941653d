#!/usr/bin/env python3
"""``phi3 serve --ray`` under load: scaling from 1 to 2 replicas, and what Ray Serve adds to one stream.

    python benchmarks/ray_bench.py                              # smoke on the reference backend (fp32)
    python benchmarks/ray_bench.py --backend openvino --precision int4 --duration 60 --repeats 5

Measures, on one model, with the request and the client loop of ``benchmarks/server_bench.py``
(a streamed chat read with httpx, ``ignore_eos``, so every request decodes ``--tokens`` tokens):

1. single stream: time to first token and decode rate, one request at a time, through plain
   ``phi3 serve`` (uvicorn) and through ``phi3 serve --ray`` with one replica: the difference is
   what Ray Serve (its HTTP proxy, the ingress replica and the hop to the model replica) adds;
2. load: ``--clients`` (16) streaming clients back to back for ``--duration`` seconds against 1 and
   against 2 replicas of one CPU each (``--replica-cpus 1``): aggregate tokens/s, p50/p99 time to
   first token, errors.

Each measurement is repeated ``--repeats`` times on the same running server and reported as the
median with its min-max spread. Both runners use one thread per model (``OMP_NUM_THREADS=1`` for
plain ``phi3 serve``; Ray gives each replica as many threads as CPUs it reserved) so that only the
runner differs. Ray starts its own local cluster (``phi3 serve --ray`` without ``--ray-address``).

Writes the raw results to ``benchmarks/RAY_RESULTS.json`` (with the run's metadata: commit, command,
CPU, versions, load average at the start and the end) and renders ``benchmarks/RAY_RESULTS.md`` from
that JSON alone (``--render`` re-creates it). Refuses to start above 1-minute load average 0.5 unless
``--noisy``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reporting  # noqa: E402

LOAD_FIELDS = ("tokens/s", "p50", "p99", "requests", "errors")


class Phi3Serve:
    """``phi3 serve ARGS`` on a free loopback port, its log in a file (Ray's logs would fill a pipe)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        import server_bench as sb  # the same client loop and stats as benchmarks/server_bench.py

        self.port = sb.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="phi3-ray-bench-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "phi3", "serve", *args, "--port", str(self.port), "--log-level", "warning"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        try:
            sb.wait_ready(self.process, f"{self.url}/health", "phi3 serve")
        except SystemExit:
            self.log.seek(0)
            print(self.log.read()[-4000:], file=sys.stderr)
            raise

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        self.log.close()


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def single_stream(url: str, model: str, tokens: int, runs: int, repeats: int) -> dict[str, list[float]]:
    """Per repeat: the median TTFT (ms) and decode tok/s of ``runs`` sequential streams."""
    import httpx
    import server_bench as sb

    ttft: list[float] = []
    rate: list[float] = []
    with httpx.Client(timeout=300) as client:
        sb.stream_once(client, url, model, 4)  # warm-up
        for _ in range(repeats):
            samples = [sb.stream_once(client, url, model, tokens) for _ in range(runs)]
            ttft.append(statistics.median(s.ttft_s for s in samples) * 1000)
            rate.append(statistics.median(s.decode_tps for s in samples))
    return {"ttft_ms": ttft, "decode_tok_s": rate}


def loaded(url: str, model: str, clients: int, seconds: float, tokens: int, repeats: int) -> dict[str, list[float]]:
    """``clients`` streaming back to back for ``seconds``, ``repeats`` times: one value per repeat and field."""
    import server_bench as sb

    rows: dict[str, list[float]] = {name: [] for name in LOAD_FIELDS}
    for _ in range(repeats):
        level = sb.load_level(url, model, clients, seconds, tokens)
        ttfts = [s.ttft_s * 1000 for s in level.samples]
        rows["tokens/s"].append(sum(s.tokens for s in level.samples) / level.seconds)
        rows["p50"].append(sb.pct(ttfts, 0.5))
        rows["p99"].append(sb.pct(ttfts, 0.99))
        rows["requests"].append(len(level.samples))
        rows["errors"].append(level.errors)
        print(f"  {clients} clients: {rows['tokens/s'][-1]:.0f} tok/s, p99 TTFT {rows['p99'][-1]:.0f} ms", flush=True)
    return rows


def measure_runner(args: argparse.Namespace, serve_args: list[str], env: dict[str, str] | None) -> dict[str, Any]:
    """One server: its single-stream and its loaded measurements."""
    server = Phi3Serve(serve_args, env=env)
    try:
        single = single_stream(server.url, args.model, args.tokens, args.runs, args.repeats)
        load = loaded(server.url, args.model, args.clients, args.duration, args.tokens, args.repeats)
    finally:
        server.stop()
    return {"single": single, "load": load}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Plain ``phi3 serve`` (one thread), then ``--ray`` with 1 and 2 replicas of one CPU."""
    base = [args.model, "-b", args.backend, "-p", args.precision, "--max-queue", str(args.clients + 1)]
    print("plain phi3 serve (uvicorn), one thread", flush=True)
    plain = measure_runner(args, base, {"OMP_NUM_THREADS": "1"})
    ray: dict[str, Any] = {}
    for replicas in (1, 2):
        print(f"phi3 serve --ray, {replicas} replica(s) of 1 CPU", flush=True)
        ray[str(replicas)] = measure_runner(
            args, ["--ray", *base, "--replicas", str(replicas), "--replica-cpus", "1"], None
        )
    return {"plain": plain, "ray": ray}


def _added(ray: list[float], local: list[float]) -> str:
    return f"{statistics.median(ray) - statistics.median(local):+.1f}"


def _per_token_ms(ray: list[float], plain: list[float]) -> str:
    return f"{1000 / statistics.median(ray) - 1000 / statistics.median(plain):+.2f}"


def _load_row(runner: str, replicas: str, rows: dict[str, list[float]]) -> str:
    return f"| {runner} | {replicas} | " + " | ".join(spread(rows[name]) for name in LOAD_FIELDS) + " |"


def _ratio(two: dict[str, list[float]], one: dict[str, list[float]]) -> str:
    return f"{statistics.median(two['tokens/s']) / statistics.median(one['tokens/s']):.2f}"


def render_header(results: dict[str, Any]) -> list[str]:
    return [
        "# phi3 serve --ray benchmark",
        "",
        "Rendered by `python benchmarks/ray_bench.py --render` from `RAY_RESULTS.json`; do not edit.",
        "",
        reporting.provenance(results, "ray_bench.py"),
        "",
        f"Model `{results['model']}` on `{results['backend']}` at {results['precision']}, {results['tokens']} tokens "
        "per request (ignore_eos), a local Ray cluster started by phi3 serve --ray. Every cell is the median of the "
        "repeats with the (min-max) spread. With 2 replicas of one CPU each on this "
        f"{results['cpus']}-CPU machine, Ray's proxy, ingress replica, controller and the {results['clients']} "
        "client threads run on the same machine as the replicas, so the 2-replica rows show Ray spreading "
        "requests on one machine, not a cluster of separate nodes.",
        "",
    ]


def render_single(results: dict[str, Any]) -> list[str]:
    plain, one = results["plain"]["single"], results["ray"]["1"]["single"]
    return [
        f"## Single stream: what Ray Serve adds ({results['runs']} sequential requests per repeat, "
        f"{results['repeats']} repeats)",
        "",
        "| runner | TTFT (ms) | added TTFT (ms) | decode tok/s |",
        "| --- | --- | --- | --- |",
        f"| phi3 serve (uvicorn) | {spread(plain['ttft_ms'])} | | {spread(plain['decode_tok_s'])} |",
        f"| phi3 serve --ray, 1 replica | {spread(one['ttft_ms'])} | {_added(one['ttft_ms'], plain['ttft_ms'])} "
        f"| {spread(one['decode_tok_s'])} |",
        "",
        f"Per streamed token, Ray Serve adds {_per_token_ms(one['decode_tok_s'], plain['decode_tok_s'])} ms "
        "(from the medians: each piece travels replica -> ingress -> proxy -> client instead of thread -> client).",
        "",
    ]


def render_load(results: dict[str, Any]) -> list[str]:
    ray = results["ray"]
    return [
        f"## {results['clients']} concurrent streaming clients ({results['duration']:.0f} s per repeat, "
        f"{results['repeats']} repeats)",
        "",
        "| runner | replicas | aggregate tokens/s | p50 TTFT (ms) | p99 TTFT (ms) | requests | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _load_row("phi3 serve (uvicorn)", "-", results["plain"]["load"]),
        *(_load_row("phi3 serve --ray", n, ray[n]["load"]) for n in sorted(ray)),
        "",
        f"Scaling, 1 -> 2 replicas: aggregate tokens/s x{_ratio(ray['2']['load'], ray['1']['load'])} "
        "(medians; 2.00 would be linear).",
        "",
    ]


def render(results: dict[str, Any]) -> str:
    lines = render_header(results) + render_single(results) + render_load(results)
    lines += [reporting.versions_line(results), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smoke")
    parser.add_argument("--backend", default="reference")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--runs", type=int, default=10, help="sequential requests per single-stream repeat")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "RAY_RESULTS.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.out, render)
        return 0
    meta = reporting.run_metadata("ray_bench.py", argv, reporting.refuse_if_noisy(args.noisy))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = ("model", "backend", "precision", "tokens", "runs", "clients", "duration", "repeats")
    results = {**meta, **{name: getattr(args, name) for name in settings}, **measure(args)}
    with contextlib.suppress(ImportError):  # phi3 serve --ray imported it in its own process: its version
        import ray  # noqa: F401

    reporting.finish(results)
    reporting.write(args.out, results, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
