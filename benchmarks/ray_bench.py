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

Writes ``benchmarks/RAY_RESULTS.md``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import server_bench as sb  # noqa: E402  (benchmarks/server_bench.py: the same client loop and stats)


class Phi3Serve:
    """``phi3 serve ARGS`` on a free loopback port, its log in a file (Ray's logs would fill a pipe)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
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


@dataclass
class Spread:
    values: list[float]

    def __str__(self) -> str:
        if not self.values:
            return "n/a"
        return f"{statistics.median(self.values):.1f} ({min(self.values):.1f}-{max(self.values):.1f})"


def single_stream(url: str, model: str, tokens: int, runs: int, repeats: int) -> tuple[Spread, Spread]:
    """Median TTFT (ms) and decode tok/s of ``runs`` sequential streams, once per repeat."""
    ttft: list[float] = []
    rate: list[float] = []
    with httpx.Client(timeout=300) as client:
        sb.stream_once(client, url, model, 4)  # warm-up
        for _ in range(repeats):
            samples = [sb.stream_once(client, url, model, tokens) for _ in range(runs)]
            ttft.append(statistics.median(s.ttft_s for s in samples) * 1000)
            rate.append(statistics.median(s.decode_tps for s in samples))
    return Spread(ttft), Spread(rate)


def loaded(url: str, model: str, clients: int, seconds: float, tokens: int, repeats: int) -> dict[str, Spread]:
    """``clients`` streaming back to back for ``seconds``, ``repeats`` times."""
    rows: dict[str, list[float]] = {"tokens/s": [], "p50": [], "p99": [], "requests": [], "errors": []}
    for _ in range(repeats):
        level = sb.load_level(url, model, clients, seconds, tokens)
        ttfts = [s.ttft_s * 1000 for s in level.samples]
        rows["tokens/s"].append(sum(s.tokens for s in level.samples) / level.seconds)
        rows["p50"].append(sb.pct(ttfts, 0.5))
        rows["p99"].append(sb.pct(ttfts, 0.99))
        rows["requests"].append(len(level.samples))
        rows["errors"].append(level.errors)
        print(f"  {clients} clients: {rows['tokens/s'][-1]:.0f} tok/s, p99 TTFT {rows['p99'][-1]:.0f} ms", flush=True)
    return {name: Spread(values) for name, values in rows.items()}


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
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = [args.model, "-b", args.backend, "-p", args.precision, "--max-queue", str(args.clients + 1)]

    print("plain phi3 serve (uvicorn), one thread", flush=True)
    plain = Phi3Serve(base, env={"OMP_NUM_THREADS": "1"})
    try:
        plain_ttft, plain_rate = single_stream(plain.url, args.model, args.tokens, args.runs, args.repeats)
        plain_load = loaded(plain.url, args.model, args.clients, args.duration, args.tokens, args.repeats)
    finally:
        plain.stop()
    ray_rows: dict[int, tuple[Spread, Spread, dict[str, Spread]]] = {}
    for replicas in (1, 2):
        print(f"phi3 serve --ray, {replicas} replica(s) of 1 CPU", flush=True)
        server = Phi3Serve(["--ray", *base, "--replicas", str(replicas), "--replica-cpus", "1"])
        try:
            ttft, rate = single_stream(server.url, args.model, args.tokens, args.runs, args.repeats)
            ray_rows[replicas] = (
                ttft,
                rate,
                loaded(server.url, args.model, args.clients, args.duration, args.tokens, args.repeats),
            )
        finally:
            server.stop()

    def added(ray: Spread, local: Spread) -> str:
        return f"{statistics.median(ray.values) - statistics.median(local.values):+.1f}"

    one = ray_rows[1]
    lines = [
        "# phi3 serve --ray benchmark",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, `python benchmarks/ray_bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + f"`; model `{args.model}` on `{args.backend}` at {args.precision}, {args.tokens} tokens per request "
        f"(ignore_eos), {os.cpu_count()} CPUs, Ray {_ray_version()}, a local Ray cluster started by phi3 serve --ray.",
        "",
        "Every cell is the median of the repeats with the (min-max) spread. **Read with care: this machine has "
        f"{os.cpu_count()} cores, shared with other work while this ran.** With 2 replicas of one CPU each, the "
        "replicas take both cores and Ray's proxy, ingress replica, controller and the 16 client threads compete "
        "with them for the same cores, so the 2-replica numbers show Ray spreading requests, not the speed-up a "
        "cluster of real nodes (one replica per machine) would give.",
        "",
        f"## Single stream: what Ray Serve adds ({args.runs} sequential requests per repeat, {args.repeats} repeats)",
        "",
        "| runner | TTFT (ms) | added TTFT (ms) | decode tok/s |",
        "| --- | --- | --- | --- |",
        f"| phi3 serve (uvicorn) | {plain_ttft} | | {plain_rate} |",
        f"| phi3 serve --ray, 1 replica | {one[0]} | {added(one[0], plain_ttft)} | {one[1]} |",
        "",
        f"Per streamed token, Ray Serve adds {_per_token_ms(one[1], plain_rate)} ms (from the medians: each "
        "piece travels replica -> ingress -> proxy -> client instead of thread -> client); it matters for a "
        "model as fast as the smoke model, much less for a real one decoding at tens of ms per token.",
        "",
        f"## {args.clients} concurrent streaming clients ({args.duration:.0f} s per repeat, {args.repeats} repeats)",
        "",
        "| runner | replicas | aggregate tokens/s | p50 TTFT (ms) | p99 TTFT (ms) | requests | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        _load_row("phi3 serve (uvicorn)", "-", plain_load),
        *(_load_row("phi3 serve --ray", str(n), rows[2]) for n, rows in ray_rows.items()),
        "",
        f"Scaling, 1 -> 2 replicas: aggregate tokens/s x{_ratio(ray_rows[2][2], ray_rows[1][2])} "
        "(medians; 2.0 would be perfect on two free cores).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


def _load_row(runner: str, replicas: str, rows: dict[str, Spread]) -> str:
    return (
        f"| {runner} | {replicas} | {rows['tokens/s']} | {rows['p50']} | {rows['p99']} | {rows['requests']} "
        f"| {rows['errors']} |"
    )


def _per_token_ms(ray: Spread, plain: Spread) -> str:
    return f"{1000 / statistics.median(ray.values) - 1000 / statistics.median(plain.values):+.2f}"


def _ratio(two: dict[str, Spread], one: dict[str, Spread]) -> str:
    return f"{statistics.median(two['tokens/s'].values) / statistics.median(one['tokens/s'].values):.2f}"


def _ray_version() -> str:
    try:
        import ray

        return str(ray.__version__)
    except ImportError:
        return "(not installed)"


if __name__ == "__main__":
    raise SystemExit(main())
