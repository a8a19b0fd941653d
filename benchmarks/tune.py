#!/usr/bin/env python3
"""Sweeping the seed stacks' settings on the benchmark model: setting -> decode tok/s, TTFT, KL.

    python benchmarks/tune.py openvino --repeat 3     # ~10-15 min on 2 cores
    python benchmarks/tune.py dml --repeat 3
    python benchmarks/tune.py --render                # TUNING.md again, from TUNING.json

Each setting is a recipe (artifact options: how the int4 weights are built) or load options
(OpenVINO compile properties, ONNX Runtime session options) on the default recipe. Every measured
run is a new process that loads through phi3's public API (``phi3.load(..., **options)``), warms up
with a 2-token request, then decodes ``--new-tokens`` tokens from an exact ``--prompt-tokens``
prompt with EOS suppressed. Runs are interleaved (repeat 1 runs every setting once, then repeat 2,
each starting one setting later) and paired against the default setting of the same repeat, so a
setting counts as faster only if it beat the default in *every* repeat. Quality: teacher-forced
mean KL(fp32 || artifact) and top-1 agreement over ``run.py``'s parity prompts, with
``workers.py``'s ``parity_*`` modes (the same machinery RESULTS.md's quality table uses).

Writes the raw results to ``benchmarks/TUNING.json`` (one entry per backend, each with its own run's
metadata: commit, command, CPU, versions, load average at the start and the end; a sweep replaces its
backend's entry) and renders ``benchmarks/TUNING.md`` from that JSON alone (``--render`` re-creates it).
A sweep refuses to start above 1-minute load average 0.5 unless ``--noisy``, and a noisy sweep's table
gives no verdicts. What the project decided from the tables is kept by hand in ``TUNING-decisions.md``,
which the report links to. Nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reporting  # noqa: E402
import run as bench_run  # noqa: E402  (the model builder, shapes, parity prompts)

from phi3 import bench  # noqa: E402
from phi3.bench import BenchChildError, run_child  # noqa: E402

CHILD = [sys.executable, str(Path(__file__).resolve()), "--child"]
WORKERS = [sys.executable, str(HERE / "workers.py")]


@dataclass
class Setting:
    """One point of the sweep: a name, artifact options (a recipe) and load options."""

    name: str
    kind: str  # recipe | load
    artifact: dict[str, Any]
    load: dict[str, Any]
    what: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] | None = None
    error: str | None = None
    artifact_path: str | None = None


def openvino_settings() -> list[Setting]:
    """phi3-openvino's default recipe (accurate) first, then other recipes, then compile properties."""
    guide = {"group_size": 128, "ratio": 0.6, "sym": True}
    accurate = {**guide, "group_size": 64}
    return [
        Setting(
            "default",
            "recipe",
            accurate,
            {},
            "accurate recipe: int4 sym, group 64, ratio 0.6; LATENCY, 1 stream, f32 on the CPU",
        ),
        Setting("guide", "recipe", guide, {}, "the product guide's recipe: int4 sym, group 128, ratio 0.6"),
        Setting("asym", "recipe", {**accurate, "sym": False}, {}, "asymmetric int4, group 64, ratio 0.6"),
        Setting("ratio-1.0", "recipe", {**guide, "ratio": 1.0}, {}, "every weight int4 (ratio 1.0), group 128"),
        Setting("ratio-1.0-g64", "recipe", {**guide, "ratio": 1.0, "group_size": 64}, {}, "ratio 1.0, group 64"),
        Setting("ratio-0.8", "recipe", {**guide, "ratio": 0.8}, {}, "ratio 0.8, group 128"),
        Setting(
            "dq-off",
            "load",
            accurate,
            {"ov_config": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}},
            "DYNAMIC_QUANTIZATION_GROUP_SIZE=0 (activations stay fp32)",
        ),
        Setting(
            "dq-128",
            "load",
            accurate,
            {"ov_config": {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}},
            "DYNAMIC_QUANTIZATION_GROUP_SIZE=128",
        ),
        Setting(
            "bf16",
            "load",
            accurate,
            {"ov_config": {"INFERENCE_PRECISION_HINT": "bf16"}},
            "INFERENCE_PRECISION_HINT=bf16 (OpenVINO's own CPU default where the CPU has bf16)",
        ),
        Setting("kv-f16", "load", accurate, {"ov_config": {"KV_CACHE_PRECISION": "f16"}}, "KV_CACHE_PRECISION=f16"),
        Setting(
            "threads-2-noht",
            "load",
            accurate,
            {"ov_config": {"INFERENCE_NUM_THREADS": "2", "ENABLE_HYPER_THREADING": "NO"}},
            "INFERENCE_NUM_THREADS=2, ENABLE_HYPER_THREADING=NO",
        ),
        Setting(
            "throughput-hint",
            "load",
            accurate,
            {"ov_config": {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "1"}},
            "PERFORMANCE_HINT=THROUGHPUT with NUM_STREAMS=1",
        ),
    ]


def dml_settings() -> list[Setting]:
    """phi3-dml's default build first, then block sizes / accuracy levels, then session options."""
    return [
        Setting("default", "recipe", {}, {}, "block 32, builder's accuracy level (4 for CPU int4)"),
        Setting("block-128", "recipe", {"block_size": 128}, {}, "block 128"),
        Setting("block-64", "recipe", {"block_size": 64}, {}, "block 64"),
        Setting("acc-1", "recipe", {"accuracy_level": 1}, {}, "accuracy_level 1 (fp32 activations)"),
        Setting("lm-head-int8", "recipe", {"lm_head": "int8"}, {}, "LM head int8 (matmul_mixed_precision)"),
        Setting("threads-2", "load", {}, {"intra_op_num_threads": 2}, "intra_op_num_threads=2"),
        Setting("threads-1", "load", {}, {"intra_op_num_threads": 1}, "intra_op_num_threads=1"),
    ]


SWEEPS = {"openvino": openvino_settings, "dml": dml_settings}


def log(message: str) -> None:
    bench_run.log(message)


# -- the measuring child ----------------------------------------------------------------------


def child_main(spec_path: str, out_path: str) -> int:
    """Load through phi3 with the setting's options in this fresh process, warm up, generate."""
    import phi3

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    started = time.perf_counter()
    model = phi3.load(spec["model"], backend=spec["backend"], precision="int4", **spec["options"])
    out: dict[str, Any] = {"load_s": time.perf_counter() - started, "artifact": str(model.artifact.path)}
    try:
        if spec["generate"]:
            model.generate(bench.WARMUP_PROMPT, max_new_tokens=2, ignore_eos=True)
            stream = model.stream(spec["prompt"], max_new_tokens=int(spec["new_tokens"]), ignore_eos=True)
            for _ in stream:
                pass
            result = stream.result
            out.update(
                ttft_s=result.time_to_first_token_s,
                decode_tokens_per_s=result.decode_tokens_per_s,
                new_tokens=result.new_tokens,
                prompt_tokens=result.prompt_tokens,
            )
    finally:
        model.close()
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")
    return 0


# -- the sweep --------------------------------------------------------------------------------


def _spec(
    setting: Setting, model: Path, backend: str, prompt: str, args: argparse.Namespace, generate: bool
) -> dict[str, Any]:
    return {
        "model": str(model),
        "backend": backend,
        "options": {**setting.artifact, **setting.load},
        "prompt": prompt,
        "new_tokens": args.new_tokens,
        "generate": generate,
    }


def measure(
    settings: list[Setting], model: Path, backend: str, prompt: str, args: argparse.Namespace, env: Mapping[str, str]
) -> None:
    for setting in settings:
        log(f"building / warming up: {setting.name}")
        try:
            warm = run_child(CHILD, _spec(setting, model, backend, prompt, args, True), env=env)
            setting.artifact_path = warm["artifact"]
        except BenchChildError as exc:
            setting.error = f"build or warm-up failed: {exc.message}"
    for index in range(args.repeat):
        live = [s for s in settings if s.error is None]
        order = live[index % len(live) :] + live[: index % len(live)] if live else []
        for setting in order:
            log(f"repeat {index + 1}/{args.repeat}: {setting.name}")
            try:
                got = run_child(CHILD, _spec(setting, model, backend, prompt, args, True), env=env)
            except BenchChildError as exc:
                setting.error = f"repeat {index + 1} failed: {exc.message}"
                continue
            if got.get("new_tokens") != args.new_tokens:
                setting.error = f"decoded {got.get('new_tokens')} tokens instead of {args.new_tokens}"
                continue
            got["repeat"] = index + 1
            got["load_average_1min"] = (bench_run.load_average() or [None])[0]
            setting.runs.append(got)


def quality(
    settings: list[Setting], model: Path, backend: str, args: argparse.Namespace, workdir: Path, env: Mapping[str, str]
) -> None:
    """Teacher-forced KL vs transformers fp32, once per distinct numerics (recipe, or compile properties)."""
    from phi3.testing.tiny_model import tokenizer_vocab_size

    prompts_ids = [bench_run.encode(model, p) for p in bench_run.PARITY_PROMPTS]
    ref_npy = workdir / "tune-parity-ref.npy"
    base: dict[str, Any] = {
        "prompts_ids": prompts_ids,
        "new_tokens": args.parity_tokens,
        "used_vocab": tokenizer_vocab_size(),
        "eos_ids": bench_run.eos_ids(model),
    }
    log("quality: transformers fp32 reference")
    ref = run_child(WORKERS, {**base, "mode": "parity_ref", "checkpoint": str(model), "out_npy": str(ref_npy)}, env=env)
    base.update(continuations=ref["continuations"], ref_npy=str(ref_npy))
    for setting in settings:
        if setting.artifact_path is None:
            continue
        if backend == "dml" and setting.kind == "load":
            setting.quality = {"same_as": "default"}  # session threads do not change the weights or the math
            continue
        log(f"quality: {setting.name}")
        try:
            if backend == "openvino":
                from phi3_openvino.api import compile_defaults

                ov_config = {**compile_defaults("cpu", "int4"), **setting.load.get("ov_config", {})}
                spec = {**base, "mode": "parity_ov", "artifact": setting.artifact_path, "ov_config": ov_config}
            else:
                spec = {**base, "mode": "parity_og", "artifact": setting.artifact_path}
            setting.quality = run_child(WORKERS, spec, env=env)
        except BenchChildError as exc:
            setting.quality = {"error": exc.message}


def paired_ratios(setting: Mapping[str, Any], default: Mapping[str, Any], metric: str) -> list[float]:
    by_repeat = {r["repeat"]: r for r in default["runs"]}
    return [
        run[metric] / by_repeat[run["repeat"]][metric]
        for run in setting["runs"]
        if run["repeat"] in by_repeat and by_repeat[run["repeat"]].get(metric)
    ]


def verdict(ratios: Sequence[float], higher_is_better: bool, quiet: bool = True) -> str:
    """'better'/'worse' only when every paired repeat agrees, else 'undecided'; none on a noisy sweep."""
    if not ratios:
        return "-"
    if not quiet:
        return "no verdict: noisy run"
    better = [(r > 1) if higher_is_better else (r < 1) for r in ratios]
    if all(better):
        return f"better in {len(ratios)}/{len(ratios)}"
    if not any(better):
        return f"worse in {len(ratios)}/{len(ratios)}"
    return f"undecided ({sum(better)}/{len(ratios)} better)"


# -- rendering --------------------------------------------------------------------------------

HEADERS = (
    "setting",
    "kind",
    "what",
    "decode tok/s",
    "TTFT ms",
    "mean KL",
    "top-1",
    "decode vs default (paired)",
    "TTFT vs default (paired)",
)


def _stat(runs: Sequence[Mapping[str, Any]], metric: str, scale: float = 1.0, digits: int = 1) -> str:
    values = [r[metric] * scale for r in runs if r.get(metric) is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _paired(ratios: list[float], higher_is_better: bool, quiet: bool) -> str:
    return "-" if not ratios else f"{statistics.median(ratios):.3f} ({verdict(ratios, higher_is_better, quiet)})"


def setting_row(s: Mapping[str, Any], settings: Sequence[Mapping[str, Any]], default: Any, quiet: bool) -> list[str]:
    q = s.get("quality") or {}
    if q.get("same_as"):
        q = next((x.get("quality") or {} for x in settings if x["name"] == q["same_as"]), {})
    compared = default is not None and s is not default
    decode = paired_ratios(s, default, "decode_tokens_per_s") if compared else []
    ttft = paired_ratios(s, default, "ttft_s") if compared else []
    return [
        f"`{s['name']}`",
        s["kind"],
        s["what"],
        "error: " + s["error"] if s["error"] and not s["runs"] else _stat(s["runs"], "decode_tokens_per_s"),
        _stat(s["runs"], "ttft_s", 1000, 0),
        "-" if "mean_kl" not in q else f"{q['mean_kl']:.4f}",
        "-" if "top1_agreement" not in q else f"{q['top1_agreement'] * 100:.1f} %",
        _paired(decode, True, quiet),
        _paired(ttft, False, quiet),
    ]


def render_backend(data: Mapping[str, Any]) -> list[str]:
    settings = data["settings_swept"]
    default = next((s for s in settings if s["name"] == "default" and not s["error"]), None)
    quiet = reporting.is_quiet(data["load_average"]["start"])
    loads = [r["load_average_1min"] for s in settings for r in s["runs"] if r.get("load_average_1min") is not None]
    n, swept = data["repeat"], len(settings) - 1
    return [
        f"## {data['backend']}\n",
        reporting.provenance(data, "tune.py")
        + (f" 1-minute load during the runs: {min(loads):.1f}-{max(loads):.1f}." if loads else "")
        + f" Took {data['elapsed_s'] / 60:.1f} min. Model: {data['model']['name']} "
        f"({data['model']['parameters'] / 1e6:.0f}M parameters), {data['prompt_tokens']}-token prompt, "
        f"{data['new_tokens']} new tokens, {n} interleaved repeats, each run a new process.\n",
        reporting.table(HEADERS, [setting_row(s, settings, default, quiet) for s in settings]) + "\n",
        "Decode and TTFT: median (min-max) over the repeats. *vs default*: the median of the per-repeat ratio to the "
        "default setting measured in the same repeat; *better in N/N* only when every repeat agrees, else "
        f"*undecided*, and no verdict at all on a noisy run. Even *better/worse in {n}/{n}* happens by chance with "
        f"probability {2 / 2**n:.2f} per setting when the two are equally fast, so with {swept} settings about "
        f"{swept * 2 / 2**n:.1f} such verdicts are expected from noise alone. KL: teacher-forced mean "
        f"KL(fp32 || artifact) in nats per token over {data['parity_prompts']} prompts x {data['parity_tokens']} "
        "tokens (random weights: read it as a relative cost between settings).\n",
        reporting.versions_line(data) + "\n",
    ]


def render(results: Mapping[str, Any]) -> str:
    parts = [
        "# Tuning the seed stacks\n",
        "Rendered by `python benchmarks/tune.py --render` from `TUNING.json`; do not edit. One setting is changed "
        "at a time against the backend's default. What the project changed because of it, and what it did not, "
        "is in [TUNING-decisions.md](TUNING-decisions.md) (kept by hand).\n",
    ]
    for backend in SWEEPS:
        if backend in results["backends"]:
            parts += render_backend(results["backends"][backend])
    return "\n".join(parts).rstrip() + "\n"


# -- main -------------------------------------------------------------------------------------


def sweep(args: argparse.Namespace, workdir: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Build the model, measure every setting (and its quality): the backend's raw entry."""
    shape = bench_run.MID_SHAPE if args.shape == "mid" else bench_run.SMALL_SHAPE
    name = "phi3-mid-4l" if args.shape == "mid" else "phi3-small-check"
    log(f"model: {name}")
    model = bench_run.build_model(workdir, shape, name)
    prompt = bench.build_prompt(model, args.prompt_tokens)
    settings = SWEEPS[args.backend]()
    if args.only:
        wanted = {"default", *args.only.split(",")}
        settings = [s for s in settings if s.name in wanted]
    measure(settings, model, args.backend, prompt, args, env)
    if not args.skip_quality:
        try:
            quality(settings, model, args.backend, args, workdir, env)
        except BenchChildError as exc:
            log(f"quality skipped: the fp32 reference failed: {exc.message}")
    weights = bench_run.roofline.safetensors_folder(model)
    return {
        "backend": args.backend,
        "elapsed_s": time.perf_counter() - bench_run.STARTED,
        "model": {"name": name, "shape": shape, "parameters": weights.total / 4},
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "parity_tokens": args.parity_tokens,
        "parity_prompts": len(bench_run.PARITY_PROMPTS),
        "repeat": args.repeat,
        "settings_swept": [s.__dict__ for s in settings],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backend", nargs="?", choices=sorted(SWEEPS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=None, metavar="A,B", help="sweep only these settings (default is added)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--parity-tokens", type=int, default=32)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--shape", choices=("mid", "small"), default="mid")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--output", type=Path, default=HERE / "TUNING.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render or args.backend is None:
        reporting.rerender(args.output, render)
        return 0
    meta = reporting.run_metadata("tune.py", argv, reporting.refuse_if_noisy(args.noisy))
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "tune-home"  # its own cache: the artifacts of every recipe, kept between sweeps
    env = {
        **os.environ,
        "PHI3_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "1",
    }
    os.environ.update({k: env[k] for k in ("PHI3_HOME", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")})
    entry = reporting.finish({**meta, **sweep(args, workdir, env)})
    raw = reporting.raw_path(args.output)
    results = json.loads(raw.read_text(encoding="utf-8")) if raw.is_file() else {"backends": {}}
    results["backends"][args.backend] = json.loads(json.dumps(entry, default=str))
    reporting.write(args.output, results, render)
    shutil.rmtree(workdir / "scratch-tune", ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
