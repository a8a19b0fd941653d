#!/usr/bin/env python3
"""What constrained decoding costs: decode tokens/s free vs constrained, per backend and engine.

    python benchmarks/structured_bench.py               # ~5-10 min on 2 cores; writes STRUCTURED_RESULTS.{json,md}
    python benchmarks/structured_bench.py --shape small # check the script in a minute (numbers mean nothing)
    python benchmarks/structured_bench.py --render      # re-create STRUCTURED_RESULTS.md from the committed JSON

The model is benchmarks/run.py's mid-size Phi-3 (Phi-3-mini's per-layer shapes, 4 layers, vocab
32064), built by the same builder, int4 on every backend. Each row decodes the same prompt twice per
round, free (``ignore_eos``) and constrained, for ``--new-tokens`` tokens; rounds are interleaved
across rows and repeated, and the table reports the median and the spread (min-max) of the decode
rate (tokens after the first / time after the first). The constraint is a JSON Schema (an array of
at least 40 small objects: keys, integers, short strings, booleans) that cannot close within the
budget, so every step is masked; an engine that enforces no JSON Schema runs the equivalent-length
regular expression instead, and the table says so.

A run refuses to start when the 1-minute load average is above 0.5 (``--noisy`` runs anyway and the
report says so). The raw results (commit, versions imported, CPU, load before and after, command) are
written next to the report, which is rendered from them alone.

Everything runs in this process through phi3's public API (``phi3.load`` / ``Model.stream``), so
the numbers include what phi3 adds. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reporting  # noqa: E402

if TYPE_CHECKING:
    import phi3

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
    ("llamacpp", None),
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
    import phi3

    options: dict[str, Any] = {"backend": backend, "precision": "int4"}
    if engine is not None:
        options["engine"] = engine
    if backend in ("dml", "llamacpp"):
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
    machine_state = reporting.machine_state(results["load_average"])
    lines = [
        "# Structured output: what constraining costs",
        "",
        "Rendered by `python benchmarks/structured_bench.py --render` from `STRUCTURED_RESULTS.json`; do not edit.",
        "",
        f"Measured {results['date']} at commit `{results.get('commit') or 'unknown'}` with "
        f"`{results.get('command') or 'benchmarks/structured_bench.py'}` on {results['machine']} "
        f"({results.get('cpu_model') or 'CPU model unknown'}, {results['cpus']} CPUs), {machine_state}: "
        f"1/5/15-minute load average {results['load_average']['start']} at the start and "
        f"{results['load_average']['end']} at the end. Read the spread, not one number. "
        f"Model: benchmarks/run.py's {results.get('shape_name', 'mid')}-size random-weight Phi-3 "
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
        " objects (compact JSON), which cannot close within the budget, so every step is masked.",
        "",
    ]
    regex_rows = [f"{row['backend']}/{row['engine']}" for row in results["rows"] if row["kind"] == "regex"]
    if regex_rows:
        lines += [
            f"{', '.join(regex_rows)} enforce no JSON Schema, so they run the regular expression `{REGEX}` instead,"
            " which also masks every step.",
            "",
        ]
    lines += [
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
    ("llamacpp", "llama"): "llguidance token masks (phi3_llamacpp.grammar)",
}


def load_rows(source: Path) -> tuple[list[tuple[phi3.Model, str, dict[str, Any], dict[str, Any]]], list[str]]:
    """Every row that loads, with its constraint and its (empty) raw row; the rows that did not, and why."""
    import phi3

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
    return models, skipped


def measure(models: list[tuple[phi3.Model, str, dict[str, Any], dict[str, Any]]], rounds: int, new_tokens: int) -> None:
    """Warm every row up, then ``rounds`` interleaved rounds of free + constrained decodes into each raw row."""
    budget = {"max_new_tokens": new_tokens}
    for model, _, constraint, _ in models:  # warm-up: compile grammars, fill caches
        decode_rate(model, **budget, ignore_eos=True)
        decode_rate(model, **budget, **constraint)
    for round_index in range(rounds):
        for model, kind, constraint, row in models:
            row["free"].append(decode_rate(model, **budget, ignore_eos=True))
            row["constrained"].append(decode_rate(model, **budget, **constraint))
            print(
                f"round {round_index + 1}: {row['backend']}/{row['engine']} free "
                f"{row['free'][-1]['decode_tok_s']:.1f} tok/s, {kind} {row['constrained'][-1]['decode_tok_s']:.1f}",
                file=sys.stderr,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--shape", choices=("mid", "small"), default="mid")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--output", type=Path, default=HERE / "STRUCTURED_RESULTS.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.output, render)
        return 0

    meta = reporting.run_metadata("structured_bench.py", argv, reporting.refuse_if_noisy(args.noisy))
    import run as bench_run  # the shared model builder and shapes

    shape = bench_run.MID_SHAPE if args.shape == "mid" else bench_run.SMALL_SHAPE
    os.environ.setdefault("PHI3_HOME", str(args.workdir / "phi3-home-structured"))
    source = bench_run.build_model(args.workdir, shape, f"structured-{args.shape}")
    models, skipped = load_rows(source)
    measure(models, args.rounds, args.new_tokens)
    for model, *_ in models:
        model.close()
    results = {
        **meta,
        "shape_name": args.shape,
        "shape": ", ".join(f"{k} {v}" for k, v in shape.items()),
        "rounds": args.rounds,
        "new_tokens": args.new_tokens,
        "rows": [row for *_, row in models],
        "skipped": skipped,
    }
    reporting.finish(results)
    reporting.write(args.output, results, render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
