#!/usr/bin/env python3
"""Where a decoded token's time goes, from each engine's own profiler (issue 23 item 3).

    python benchmarks/decode_profile.py                  # openvino and dml int4, mid shape -> PROFILE.{json,md}
    python benchmarks/decode_profile.py --shape small --noisy   # checks the script in a minute
    python benchmarks/decode_profile.py --render         # the report again, from PROFILE.json

phi3 builds its default int4 artifact of the mid-size model (``MID_SHAPE`` of ``benchmarks/run.py``)
for each backend; the artifact is then run outside phi3 with the runtime's profiler on, the way
phi3's engine runs it (same files, same compile properties), so the per-operator times are the
runtime's own:

- **openvino**: the IR compiled by ``openvino.Core`` with phi3-openvino's ``compile_defaults("cpu", "int4")`` plus
  ``PERF_COUNT=YES``; a 128-token prefill, then single-token decode steps; per step, the infer
  request's ``profiling_info`` (per node: type, the kernel that ran it, real time);
- **dml** (ONNX Runtime GenAI, CPU provider here): ``og.Generator`` on the artifact (with the intra-op
  thread count phi3-dml gives the CPU provider: one per physical core), then decode
  steps with the runtime option ``enable_profiling`` (one ONNX Runtime trace per token; the
  ``*_kernel_time`` events per operator type).

Per engine the report gives the wall time per decoded token without and with profiling (the
profiler's own cost), each operator type's time per token and share, and the bandwidth the weight
matrix products reach: the artifact's weight bytes read per token (:mod:`roofline`, counted from the
files) over the time of the matrix-product operators alone, against this machine's measured read
bandwidth. The verdict on the roofline target (85 %, issue 23) is computed from the unprofiled decode
rate. A run refuses to start above 1-minute load average 0.5 unless ``--noisy``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reporting  # noqa: E402
import roofline  # noqa: E402

ROOFLINE_TARGET = 0.85
MATMUL_OPS = {"openvino": ("FullyConnected", "FullyConnectedCompressed", "MatMul"), "dml": ("MatMulNBits", "MatMul")}
"""The operator types that multiply by the weight matrices (what reads the weight bytes)."""
TOP = 10


def log(message: str) -> None:
    print(f"[decode-profile] {message}", file=sys.stderr, flush=True)


def artifact(model_dir: Path, backend: str) -> tuple[Path, str]:
    """phi3's default int4 artifact for ``backend`` (built once, cached in PHI3_HOME) and its engine."""
    import phi3

    model = phi3.load(model_dir, backend=backend, device="CPU", precision="int4")
    try:
        return model.artifact.path, model.engine
    finally:
        model.close()


def _profile_openvino(folder: Path, prompt: int, steps: int) -> tuple[list[float], list[float], dict[str, float]]:
    import numpy as np
    import openvino as ov

    from phi3_openvino.api import compile_defaults

    core = ov.Core()
    timings: dict[str, list[float]] = {}
    ops: collections.Counter[str] = collections.Counter()
    for profiled in (False, True):
        compiled = core.compile_model(
            str(folder / "openvino_model.xml"),
            "CPU",
            {**compile_defaults("cpu", "int4"), "PERF_COUNT": "YES" if profiled else "NO"},
        )
        request = compiled.create_infer_request()
        request.reset_state()
        walls: list[float] = []
        for i in range(steps + 4 + 1):
            length = prompt if i == 0 else 1
            past = 0 if i == 0 else prompt + i - 1
            feed = {
                "input_ids": np.full((1, length), 500, dtype=np.int64),
                "attention_mask": np.ones((1, past + length), dtype=np.int64),
                "position_ids": np.arange(past, past + length, dtype=np.int64)[None],
                "beam_idx": np.zeros((1,), dtype=np.int32),
            }
            started = time.perf_counter()
            request.infer(feed)
            wall = time.perf_counter() - started
            if i >= 5:  # after the prefill and 4 warm-up steps
                walls.append(wall)
                if profiled:
                    for info in request.profiling_info:
                        ops[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds()
        timings["profiled" if profiled else "plain"] = walls
    return timings["plain"], timings["profiled"], {name: total / steps for name, total in ops.items()}


def _profile_dml(folder: Path, prompt: int, steps: int) -> tuple[list[float], list[float], dict[str, float]]:
    import numpy as np
    import onnxruntime_genai as og

    from phi3_dml.api import default_intra_op_threads

    config = og.Config(str(folder))
    threads = default_intra_op_threads()  # the intra-op threads phi3-dml gives the CPU provider by default
    if threads is not None:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    timings: dict[str, list[float]] = {}
    ops: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="phi3-ort-profile-") as traces:
        for profiled in (False, True):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=prompt + steps + 8, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(np.full((1, prompt), 500, dtype=np.int32))
            for _ in range(4):
                generator.generate_next_token()
            if profiled:
                generator.set_runtime_option("enable_profiling", str(Path(traces) / "token"))
            walls = []
            for _ in range(steps):
                started = time.perf_counter()
                generator.generate_next_token()
                walls.append(time.perf_counter() - started)
            if profiled:
                generator.set_runtime_option("enable_profiling", "0")
            timings["profiled" if profiled else "plain"] = walls
            del generator
        files = sorted(glob.glob(str(Path(traces) / "token*.json")))
        for path in files:
            for event in json.loads(Path(path).read_text(encoding="utf-8")):
                if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
                    ops[str(event["args"].get("op_name"))] += event["dur"] / 1e6
    per_token = {name: total / max(len(files), 1) for name, total in ops.items()}
    return timings["plain"], timings["profiled"], per_token


PROFILERS = {"openvino": _profile_openvino, "dml": _profile_dml}
WEIGHTS = {"openvino": roofline.openvino_ir, "dml": roofline.onnx_model}


def profile_backend(backend: str, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    folder, engine = artifact(model_dir, backend)
    weights = WEIGHTS[backend](folder)
    log(f"{backend}: profiling {args.steps} decode steps after a {args.prompt_tokens}-token prefill")
    plain, profiled, per_token = PROFILERS[backend](folder, args.prompt_tokens, args.steps)
    return {
        "backend": backend,
        "engine": engine,
        "weight_bytes_per_token": weights.per_token,
        "weights_how": weights.how,
        "wall_s": plain,
        "wall_profiled_s": profiled,
        "ops_s_per_token": per_token,
    }


def summarize(result: dict[str, Any], read_bytes_per_s: float) -> dict[str, Any]:
    """Decode rate, roofline share, and the matrix products' share and bandwidth, from the raw times."""
    wall = statistics.median(result["wall_s"])
    ops = result["ops_s_per_token"]
    total_ops = sum(ops.values())
    matmul = sum(t for name, t in ops.items() if name.split(" ")[0] in MATMUL_OPS[result["backend"]])
    per_token = result["weight_bytes_per_token"]
    return {
        "wall_ms": wall * 1e3,
        "wall_profiled_ms": statistics.median(result["wall_profiled_s"]) * 1e3,
        "tok_s": 1 / wall,
        "roofline": per_token / wall / read_bytes_per_s,
        "ops_ms": total_ops * 1e3,
        "matmul_ms": matmul * 1e3,
        "matmul_share": matmul / total_ops if total_ops else 0.0,
        # operator times need not add up to the wall time (OpenVINO's overlap on several threads), so the
        # matmuls' share of operator time is applied to the unprofiled wall time
        "matmul_bandwidth": per_token / (wall * matmul / total_ops) / read_bytes_per_s if matmul else 0.0,
        "other_ms": (total_ops - matmul) * 1e3,
    }


def verdict(share: float, quiet: bool) -> str:
    if not quiet:
        return "no verdict (noisy run)"
    return f"{'met' if share >= ROOFLINE_TARGET else 'missed'} (target {ROOFLINE_TARGET:.0%})"


def render_backend(result: dict[str, Any], read_bytes_per_s: float, quiet: bool) -> list[str]:
    s = summarize(result, read_bytes_per_s)
    ops = sorted(result["ops_s_per_token"].items(), key=lambda item: item[1], reverse=True)
    total = sum(t for _, t in ops) or 1.0
    rows = [[name, f"{t * 1e3:.3f}", f"{t / total:.1%}"] for name, t in ops[:TOP]]
    rest = sum(t for _, t in ops[TOP:])
    if rest:
        rows.append([f"{len(ops) - TOP} other operator types", f"{rest * 1e3:.3f}", f"{rest / total:.1%}"])
    return [
        f"## {result['backend']} ({result['engine']} engine's artifact, int4)",
        "",
        f"Decode {s['tok_s']:.1f} tok/s ({s['wall_ms']:.2f} ms/token unprofiled, {s['wall_profiled_ms']:.2f} ms"
        f" profiled); {result['weight_bytes_per_token'] / 2**20:.1f} MiB of weights read per token"
        f" ({result['weights_how']}), so **{s['roofline']:.0%} of the read-bandwidth roofline**:"
        f" {verdict(s['roofline'], quiet)}. The profiler's operator times add up to {s['ops_ms']:.2f} ms/token"
        f" (they need not equal the wall time: operators overlap on threads); the weight matrix products"
        f" ({', '.join(MATMUL_OPS[result['backend']])}) are {s['matmul_share']:.0%} of it ({s['matmul_ms']:.2f} ms),"
        f" every other operator {s['other_ms']:.2f} ms. Taken as that share of the wall time, the matrix products"
        f" read the weights at {s['matmul_bandwidth']:.0%} of the measured read bandwidth.",
        "",
        reporting.table(["operator (kernel)", "ms per token", "share of operator time"], rows),
        "",
    ]


def render(results: dict[str, Any]) -> str:
    quiet = reporting.is_quiet(results["load_average"]["start"])
    read = results["bandwidth"]["read_bytes_per_s"]
    lines = [
        "# Where decode time goes: each engine's own profiler",
        "",
        "Rendered by `python benchmarks/decode_profile.py --render` from `PROFILE.json`; do not edit.",
        "",
        reporting.provenance(results, "decode_profile.py"),
        "",
        f"Model: the {results['shape_name']} shape ({results['shape']['hidden_size']} hidden,"
        f" {results['shape']['intermediate_size']} intermediate, {results['shape']['num_hidden_layers']} layers,"
        f" {results['shape']['vocab_size']} vocab), phi3's default int4 artifact per backend, run outside phi3 with"
        f" the runtime's profiler; {results['steps']} decode steps after a {results['prompt_tokens']}-token prefill"
        " and 4 warm-up steps; per-token times are medians (wall) or means (operators) over those steps."
        f" Read bandwidth measured here: {read / 1e9:.1f} GB/s (numpy matrix-vector product over 1 GiB,"
        " benchmarks/roofline.py).",
        "",
    ]
    for result in results["backends"].values():
        lines += render_backend(result, read, quiet)
    lines += [reporting.versions_line(results), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="openvino,dml", help="comma-separated: openvino, dml")
    parser.add_argument("--shape", choices=("small", "mid"), default="mid")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=HERE / ".work" / "profile")
    parser.add_argument("--output", type=Path, default=HERE / "PROFILE.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.output, render)
        return 0
    results = reporting.run_metadata("decode_profile.py", argv, reporting.refuse_if_noisy(args.noisy))
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PHI3_HOME", str(args.workdir / "phi3-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from run import MID_SHAPE, SMALL_SHAPE

    from phi3.testing.tiny_model import make_tiny_phi3

    shape = {"small": SMALL_SHAPE, "mid": MID_SHAPE}[args.shape]
    model_dir = args.workdir / "models" / f"phi3-{args.shape}"
    if not (model_dir / "config.json").is_file():
        make_tiny_phi3(model_dir, **shape)
    results.update(shape_name=args.shape, shape=shape, steps=args.steps, prompt_tokens=args.prompt_tokens)
    log("measuring read bandwidth")
    results["bandwidth"] = roofline.measure_bandwidth()
    results["backends"] = {}
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        results["backends"][name] = profile_backend(name, model_dir, args)
    reporting.finish(results)
    reporting.write(args.output, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
