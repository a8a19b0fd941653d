#!/usr/bin/env python3
"""What a LoRA adapter costs on each backend: decode and TTFT with an adapter vs the base, and switching.

    python benchmarks/adapter_bench.py            # openvino, dml, llamacpp, mid shape -> ADAPTERS.{json,md}
    python benchmarks/adapter_bench.py --shape small --rounds 2 --noisy   # checks the script in a minute
    python benchmarks/adapter_bench.py --render              # the report again, from ADAPTERS.json

For each backend, phi3 loads the same checkpoint (``MID_SHAPE`` of ``benchmarks/run.py``: Phi-3-mini's
layer widths, 4 layers) twice at one precision (int4 by default): **plain**, without adapters, and
**lora**, with two random rank-16 peft adapters on every Phi-3 module (``qkv_proj``, ``o_proj``,
``gate_up_proj``, ``down_proj``; made by :func:`phi3.testing.adapters.make_lora_adapter`). Each round
makes these calls, every one with its own prompt of the same length (the words of one prompt rotated,
so no engine can reuse a cached prefix and every TTFT is a full prefill):

====================  ==================================================================
plain                  the model without adapters (what a user without adapters gets)
lora, base             the lora model with ``adapter=None``, after a base call
lora, adapter a        ``adapter="a"``, after an ``"a"`` call (no switch)
switch a -> b          ``adapter="b"`` right after ``"a"``
switch b -> base       ``adapter=None`` right after ``"b"``
====================  ==================================================================

Switch cost = the switching call's TTFT minus the TTFT of the same kind of call without a switch in
the same round (``b`` vs ``a``; base-after-``b`` vs base-after-base): what a server alternating
adapters between requests pays. Decode tok/s = (N - 1) / (last - first token) and TTFT (before
tokenizing to the first token) come from phi3's token clock. Rounds alternate which model goes first;
the report gives medians and min-max over rounds, and the paired per-round ratios.

The raw results (every call, plus the run's metadata: commit, command, CPU, versions, load average at
the start and the end) go to ``ADAPTERS.json`` beside the report, which is rendered from that JSON
alone. A run refuses to start above 1-minute load average 0.5 unless ``--noisy``; a noisy run's report
says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reporting  # noqa: E402

CALLS = ("plain", "lora_base", "lora_a", "switch_a_b", "switch_b_base")
"""The measured calls of a round, in the report's order (warm-up calls before them are not kept)."""
LABELS = {
    "plain": "plain (no adapters loaded)",
    "lora_base": "lora model, base",
    "lora_a": "lora model, adapter a",
    "switch_a_b": "switch a -> b",
    "switch_b_base": "switch b -> base",
}
ADAPTER_RANK = 16


def log(message: str) -> None:
    print(f"[adapter-bench] {message}", file=sys.stderr, flush=True)


def shapes() -> dict[str, dict[str, int]]:
    """``SMALL_SHAPE`` and ``MID_SHAPE`` of benchmarks/run.py (the shapes RESULTS.md uses)."""
    from run import MID_SHAPE, SMALL_SHAPE

    return {"small": SMALL_SHAPE, "mid": MID_SHAPE}


def build(workdir: Path, shape_name: str) -> tuple[Path, dict[str, Path]]:
    """The checkpoint and its two adapters (made once; a later run reuses them)."""
    from phi3.testing.adapters import make_lora_adapter
    from phi3.testing.tiny_model import make_tiny_phi3

    model_dir = workdir / "models" / f"phi3-{shape_name}"
    if not (model_dir / "config.json").is_file():
        make_tiny_phi3(model_dir, sentencepiece_model=True, **shapes()[shape_name])
    adapters = {}
    for seed, name in enumerate(("a", "b")):
        out = workdir / "adapters" / f"{shape_name}-{name}"
        if not (out / "adapter_config.json").is_file():
            log(f"making adapter {name} (rank {ADAPTER_RANK}) for the {shape_name} shape")
            make_lora_adapter(model_dir, out, rank=ADAPTER_RANK, seed=seed)
        adapters[name] = out
    return model_dir, adapters


def prompts(model_dir: Path, n_tokens: int, count: int) -> list[str]:
    """``count`` prompts of about ``n_tokens`` tokens: one prompt's words rotated, so no two share a prefix."""
    from phi3.bench.prompt import build_prompt

    words = build_prompt(model_dir, n_tokens).split()
    return [" ".join(words[i % len(words) :] + words[: i % len(words)]) for i in range(1, count + 1)]


def measure(model: Any, prompt: str, n: int, adapter: str | None) -> dict[str, float]:
    """One drained stream, timed by phi3's token clock."""
    stream = model.stream(prompt, max_new_tokens=n, ignore_eos=True, adapter=adapter)
    for _ in stream:
        pass
    result = stream.result
    if result.new_tokens != n:
        raise RuntimeError(f"got {result.new_tokens} tokens, expected {n}")
    return {
        "ttft_ms": result.time_to_first_token_s * 1000,
        "decode_tps": result.decode_tokens_per_s,
        "prompt_tokens": result.prompt_tokens,
    }


def one_round(plain: Any, lora: Any, texts: list[str], n: int, plain_first: bool) -> dict[str, Any]:
    """The calls of :data:`CALLS` (plus unkept warm-ups that set the state each measured call starts from)."""
    row: dict[str, Any] = {"order": "plain first" if plain_first else "lora first"}
    it = iter(texts)

    def lora_calls() -> None:
        measure(lora, next(it), n, None)  # the state: base active
        row["lora_base"] = measure(lora, next(it), n, None)
        measure(lora, next(it), n, "a")  # switch base -> a (not kept: covered by switch b -> base's mirror)
        row["lora_a"] = measure(lora, next(it), n, "a")
        row["switch_a_b"] = measure(lora, next(it), n, "b")
        row["switch_b_base"] = measure(lora, next(it), n, None)

    if plain_first:
        row["plain"] = measure(plain, next(it), n, None)
        lora_calls()
    else:
        lora_calls()
        row["plain"] = measure(plain, next(it), n, None)
    row["load"] = os.getloadavg()[0]
    return row


def bench_backend(backend: str, shape_name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import phi3

    model_dir, adapters = build(workdir, shape_name)
    n = args.new_tokens
    texts = prompts(model_dir, args.prompt_tokens, 8 * (args.rounds + 1))
    log(f"{backend}: loading plain and lora models ({args.precision}, {shape_name})")
    options = {"device": "CPU", "precision": args.precision}
    plain = phi3.load(model_dir, backend=backend, **options)
    lora = phi3.load(model_dir, backend=backend, adapters={k: str(v) for k, v in adapters.items()}, **options)
    try:
        one_round(plain, lora, texts[:8], min(n, 8), True)  # warm-up: first compiles, first adapter use
        rounds = []
        for i in range(args.rounds):
            row = one_round(plain, lora, texts[8 * (i + 1) : 8 * (i + 2)], n, i % 2 == 0)
            rounds.append(row)
            log(
                f"{backend} round {i + 1}: "
                + ", ".join(f"{c} {row[c]['decode_tps']:.1f} tok/s {row[c]['ttft_ms']:.0f} ms" for c in CALLS)
            )
        return {
            "backend": backend,
            "engine": lora.engine,
            "device": lora.device,
            "plain_engine": plain.engine,
            "precision": args.precision,
            "rounds": rounds,
        }
    finally:
        lora.close()
        plain.close()


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _fmt(triple: tuple[float, float, float], spec: str = ".1f") -> str:
    med, lo, hi = triple
    return f"{med:{spec}} [{lo:{spec}} to {hi:{spec}}]"


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per call: decode and TTFT stats; paired per round: adapter vs plain and switch costs."""
    rounds = result["rounds"]
    out: dict[str, Any] = {
        call: {
            "decode_tps": _stats([r[call]["decode_tps"] for r in rounds]),
            "ttft_ms": _stats([r[call]["ttft_ms"] for r in rounds]),
        }
        for call in CALLS
    }
    out["decode_ratio"] = _stats([r["lora_a"]["decode_tps"] / r["plain"]["decode_tps"] for r in rounds])
    out["ttft_ratio"] = _stats([r["lora_a"]["ttft_ms"] / r["plain"]["ttft_ms"] for r in rounds])
    out["switch_adapter_ms"] = _stats([r["switch_a_b"]["ttft_ms"] - r["lora_a"]["ttft_ms"] for r in rounds])
    out["switch_base_ms"] = _stats([r["switch_b_base"]["ttft_ms"] - r["lora_base"]["ttft_ms"] for r in rounds])
    return out


def render_tables(results: dict[str, Any]) -> list[str]:
    calls = ["| backend (engine) | call | decode tok/s | TTFT ms |", "| --- | --- | --- | --- |"]
    paired = [
        "| backend (engine) | adapter / plain decode | adapter / plain TTFT | switch a -> b, extra TTFT ms"
        " | switch b -> base, extra TTFT ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results["backends"].values():
        s = summarize(result)
        name = f"{result['backend']} ({result['engine']}, {result['precision']})"
        for call in CALLS:
            calls.append(f"| {name} | {LABELS[call]} | {_fmt(s[call]['decode_tps'])} | {_fmt(s[call]['ttft_ms'])} |")
        paired.append(
            f"| {name} | {_fmt(s['decode_ratio'], '.2f')}x | {_fmt(s['ttft_ratio'], '.2f')}x"
            f" | {_fmt(s['switch_adapter_ms'], '+.1f')} | {_fmt(s['switch_base_ms'], '+.1f')} |"
        )
    return ["## Per call", "", *calls, "", "## Paired per round", "", *paired]


def render(results: dict[str, Any]) -> str:
    loads = [r["load"] for res in results["backends"].values() for r in res["rounds"]]
    skipped = results.get("skipped", {})
    lines = [
        "# LoRA adapters: decode, TTFT and switching cost per backend",
        "",
        "Rendered by `python benchmarks/adapter_bench.py --render` from `ADAPTERS.json`; do not edit.",
        "",
        reporting.provenance(results, "adapter_bench.py")
        + f" 1-minute load per round: {min(loads):.1f}-{max(loads):.1f}." * bool(loads),
        "",
        f"Checkpoint: the {results['shape_name']} shape ({results['shape']['hidden_size']} hidden,"
        f" {results['shape']['intermediate_size']} intermediate, {results['shape']['num_hidden_layers']} layers,"
        f" {results['shape']['vocab_size']} vocab); two random rank-{results['adapter_rank']} peft LoRA adapters"
        " on qkv_proj, o_proj, gate_up_proj and down_proj. Each backend loads it twice: *plain* (no adapters) and"
        " *lora* (both adapters). Every call has its own prompt of"
        f" {results['prompt_tokens']} tokens (no prefix reuse: each TTFT is a full prefill) and decodes"
        f" {results['new_tokens']} tokens, {results['rounds']} rounds after a warm-up round, alternating which model"
        " goes first; median [min-max] over rounds. Switch cost = the switching call's TTFT minus the same kind of"
        " call's TTFT without a switch in that round (b after a vs a after a; base after b vs base after base).",
        "",
        *render_tables(results),
        "",
        *(f"Not measured: {name} ({why})." for name, why in sorted(skipped.items())),
        *([""] if skipped else []),
        reporting.versions_line(results),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="openvino,dml,llamacpp", help="comma-separated phi3 backends")
    parser.add_argument("--shape", choices=("small", "mid"), default="mid")
    parser.add_argument("--precision", default="int4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=HERE / ".work" / "adapters")
    parser.add_argument("--output", type=Path, default=HERE / "ADAPTERS.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.output, render)
        return 0
    results = reporting.run_metadata("adapter_bench.py", argv, reporting.refuse_if_noisy(args.noisy))
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PHI3_HOME", str(args.workdir / "phi3-home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results.update(
        shape_name=args.shape,
        shape=shapes()[args.shape],
        adapter_rank=ADAPTER_RANK,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        rounds=args.rounds,
        backends={},
        skipped={},
    )
    import phi3

    available = {entry.name: entry for entry in phi3.backends()}
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        entry = available.get(name)
        if entry is None or entry.info is None or not entry.info.adapters:
            results["skipped"][name] = "not installed" if entry is None else "declares no adapters"
            log(f"{name}: skipped ({results['skipped'][name]})")
            continue
        results["backends"][name] = bench_backend(name, args.shape, args.workdir, args)
    reporting.finish(results)
    reporting.write(args.output, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
