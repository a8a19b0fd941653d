#!/usr/bin/env python3
"""What constrained decoding costs: decode tokens/s free vs constrained, per backend and engine.

    python benchmarks/structured_bench.py               # ~5-10 min on 2 cores; writes STRUCTURED_RESULTS.md
    python benchmarks/structured_bench.py --shape small # check the script in a minute (numbers mean nothing)

The model is benchmarks/run.py's mid-size Phi-3 (Phi-3-mini's per-layer shapes, 4 layers, vocab
32064), built by the same builder, int4 on every backend. Each row decodes the same prompt twice per
round, free (``ignore_eos``) and constrained, for ``--new-tokens`` tokens; rounds are interleaved
across rows and repeated, and the table reports the median and the spread (min-max) of the decode
rate (tokens after the first / time after the first). The constraint is a JSON Schema (an array of
at least 40 small objects: keys, integers, short strings, booleans) that cannot close within the
budget, so every step is masked; engines that do not enforce JSON Schema (phi3-openvino's genai
engine) run the equivalent-length regular expression instead, and the table says so.

Everything runs in this process through phi3's public API (``phi3.load`` / ``Model.stream``), so
the numbers include what phi3 adds. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench_run  # noqa: E402  (the shared model builder and shapes; run.py is not modified)

import phi3  # noqa: E402

PROMPT = "Return the list of orders as JSON."
SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": 9999},
            "name": {"type": "string", "maxLength": 8},
            "ok": {"type": "boolean"},
        },
        "required": ["id", "name", "ok"],
        "additionalProperties": False,
    },
    "minItems": 40,
}
REGEX = r"(item [0-9]{1,4}: [a-z]{1,8}, ){40,}"
"""For engines without JSON Schema: also never closes within the budget, also masks every step."""
ROWS = (
    ("openvino", "genai"),
    ("openvino", "optimum"),
    ("dml", None),
)


def decode_rate(model: phi3.Model, **options: Any) -> dict[str, float]:
    """Stream one generation; decode tokens/s from the first token to the last."""
    stream = model.stream(PROMPT, **options)
    start = time.perf_counter()
    first: float | None = None
    for _ in stream:
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    tokens = stream.result.new_tokens
    assert first is not None and tokens == options["max_new_tokens"], f"decoded {tokens} tokens, not the budget"
    return {"tokens": tokens, "decode_tok_s": (tokens - 1) / (end - first), "ttft_s": first - start}


def load_row(source: Path, backend: str, engine: str | None) -> phi3.Model:
    options: dict[str, Any] = {"backend": backend, "precision": "int4"}
    if engine is not None:
        options["engine"] = engine
    if backend == "dml":
        options["device"] = "cpu"
    return phi3.load(source, **options)


def constraint_for(model: phi3.Model) -> tuple[str, dict[str, Any]]:
    if "json_schema" in model.structured_output:
        return "json_schema", {"json_schema": SCHEMA}
    if "regex" in model.structured_output:
        return "regex", {"regex": REGEX}
    raise SystemExit(f"{model.backend}/{model.engine} enforces no structured output")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Structured output: what constraining costs",
        "",
        f"Measured {results['date']} by `benchmarks/structured_bench.py` on {results['machine']} "
        f"({results['cpus']} CPUs, **shared with other jobs while it ran**: 1/5/15-minute load average "
        f"{results['load_average']['start']} at the start and {results['load_average']['end']} at the end; "
        "compare rows within this run, and read the spread, not one number). "
        "Model: benchmarks/run.py's mid-size random-weight Phi-3 "
        f"({results['shape']}), int4 on every backend. {results['rounds']} interleaved rounds; each round "
        f"decodes {results['new_tokens']} tokens free (`ignore_eos`) and {results['new_tokens']} constrained, "
        "per row. Decode rate = tokens after the first / time after the first; median (min-max).",
        "",
        "| backend | engine | constraint | free tok/s | constrained tok/s | constrained / free | grammar library |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        free = [r["decode_tok_s"] for r in row["free"]]
        constrained = [r["decode_tok_s"] for r in row["constrained"]]
        ratios = [c / f for c, f in zip(constrained, free, strict=True)]
        lines.append(
            f"| {row['backend']} | {row['engine']} | {row['kind']} | {spread(free)} | {spread(constrained)} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {row['library']} |"
        )
    lines += [
        "",
        "`constrained / free` is the median (min-max) of the per-round ratios: each round runs a row's free and "
        "constrained decodes back to back, which cancels most of the machine's load drift between rounds; the "
        "medians of the two rate columns can disagree with it when the load moved.",
        "",
        "Constraint: a JSON Schema for an array of at least 40 `{id: integer 0-9999, name: string <= 8, ok: boolean}`"
        " objects (compact JSON), which cannot close within the budget, so every step is masked. phi3-openvino's"
        " genai engine does not enforce JSON Schema (see its README: openvino-genai 2026.4.1's JSON grammar has free"
        f" whitespace), so it runs the regular expression `{REGEX}` instead, which also masks every step.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())),
        "",
    ]
    if results.get("skipped"):
        lines += ["Skipped: " + "; ".join(results["skipped"]), ""]
    return "\n".join(lines)


LIBRARIES = {
    ("openvino", "genai"): "openvino-genai StructuredOutputConfig (XGrammar)",
    ("openvino", "optimum"): "llguidance logits processor (phi3.integrations.transformers_structured)",
    ("dml", "genai"): "onnxruntime-genai set_guidance (llguidance)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--shape", choices=("mid", "small"), default="mid")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--output", type=Path, default=HERE / "STRUCTURED_RESULTS.md")
    parser.add_argument("--render", action="store_true", help="rewrite --output from the last run's structured.json")
    args = parser.parse_args(argv)
    if args.render:
        args.output.write_text(render(json.loads((args.workdir / "structured.json").read_text())))
        return 0

    load_at_start = bench_run.load_average()
    shape = bench_run.MID_SHAPE if args.shape == "mid" else bench_run.SMALL_SHAPE
    os.environ.setdefault("PHI3_HOME", str(args.workdir / "phi3-home-structured"))
    source = bench_run.build_model(args.workdir, shape, f"structured-{args.shape}")
    models: list[tuple[phi3.Model, str, dict[str, Any], dict[str, Any]]] = []
    skipped: list[str] = []
    for backend, engine in ROWS:
        try:
            model = load_row(source, backend, engine)
        except phi3.Phi3Error as exc:
            skipped.append(f"{backend}/{engine or 'default'}: {exc}")
            continue
        kind, constraint = constraint_for(model)
        row = {"backend": model.backend, "engine": model.engine, "kind": kind, "free": [], "constrained": []}
        row["library"] = LIBRARIES.get((model.backend, model.engine), "?")
        models.append((model, kind, constraint, row))
        print(f"loaded {model.backend}/{model.engine}: {kind}", file=sys.stderr)
    budget = {"max_new_tokens": args.new_tokens}
    for model, _, constraint, _ in models:  # warm-up: compile grammars, fill caches
        decode_rate(model, **budget, ignore_eos=True)
        decode_rate(model, **budget, **constraint)
    for round_index in range(args.rounds):
        for model, kind, constraint, row in models:
            row["free"].append(decode_rate(model, **budget, ignore_eos=True))
            row["constrained"].append(decode_rate(model, **budget, **constraint))
            print(
                f"round {round_index + 1}: {row['backend']}/{row['engine']} free "
                f"{row['free'][-1]['decode_tok_s']:.1f} tok/s, {kind} {row['constrained'][-1]['decode_tok_s']:.1f}",
                file=sys.stderr,
            )
    for model, *_ in models:
        model.close()
    results = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cpus": os.cpu_count(),
        "shape": ", ".join(f"{k} {v}" for k, v in shape.items()),
        "rounds": args.rounds,
        "load_average": {"start": load_at_start, "end": bench_run.load_average()},
        "new_tokens": args.new_tokens,
        "rows": [row for *_, row in models],
        "skipped": skipped,
        "versions": bench_run.versions(),
    }
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "structured.json").write_text(json.dumps(results, indent=2))
    args.output.write_text(render(results))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
