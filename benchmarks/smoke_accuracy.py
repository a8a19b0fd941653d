#!/usr/bin/env python3
"""How well the shipped smoke model answers held-out synthetic prompts, per backend and precision.

    python benchmarks/smoke_accuracy.py                    # every row whose backend is installed
    python benchmarks/smoke_accuracy.py --rows reference:fp32,openvino:int4
    python benchmarks/smoke_accuracy.py --render           # rewrite the report from the raw JSON

The smoke model (phi3.smoke) is a toy trained on phi3.smoke.corpus. The probes
(:func:`phi3.smoke.corpus.held_out`) are prompts none of which is a training prompt verbatim: sums
phrased in new ways, capitals asked differently, a two-turn "what is my name", JSON under a JSON
Schema, a weather tool call chosen on its own (tool_choice auto) and an answer from a tool's result.
Each is decoded greedily through phi3's public API (``Model.chat``) and scored by exact match (the
text, the parsed JSON, or the tool call's name and arguments).

Each row runs in its own process (a backend that crashes costs its row only). Raw results go to
``SMOKE_ACCURACY.json`` (every probe's answer), the table to ``SMOKE_ACCURACY.md``. Not part of the
test suite: int4 rounding legitimately changes a few answers of a model this small.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROWS = (
    "reference:fp32",
    "openvino:fp16",
    "openvino:int8",
    "openvino:int4",
    "dml:fp32",
    "dml:int4",
    "llamacpp:int8",
    "llamacpp:int4",
)


def _probes() -> list[Any]:
    from phi3.smoke import corpus
    from phi3.smoke.train import TrainConfig

    config = TrainConfig()
    seen = [
        str(m["content"])
        for e in corpus.examples(config.examples, seed=config.seed)
        for m in e.messages
        if m["role"] == "user"
    ]
    return corpus.held_out(seen)


def _score(probe: Any, result: Any) -> tuple[bool, str]:
    if probe.task == "tool_call":
        got = json.dumps([{"name": c.name, "arguments": c.arguments} for c in result.tool_calls], separators=(",", ":"))
        return got == probe.expected, got if result.tool_calls else f"(no call) {result.text}"
    if probe.task == "json":
        try:
            return json.loads(result.text) == json.loads(probe.expected), result.text
        except ValueError:
            return False, result.text
    return result.text.strip() == probe.expected, result.text


def run_row(row: str) -> dict[str, Any]:
    """Load smoke for one backend:precision and answer every probe (in this process)."""
    import phi3

    backend, precision = row.split(":")
    if backend == "reference":
        from phi3 import plugins
        from phi3.testing import reference_backend

        registry = plugins.get_registry()
        if "reference" not in registry.names():
            registry.register(reference_backend, "reference")
    started = time.monotonic()
    model = phi3.load("smoke", backend=backend, precision=precision, device="cpu" if backend != "openvino" else "CPU")
    load_s = time.monotonic() - started
    answers = []
    for probe in _probes():
        options: dict[str, Any] = {"max_new_tokens": 96}
        if probe.tools:
            options.update(tools=list(probe.tools), tool_choice=probe.tool_choice)
        if probe.json_schema:
            options["json_schema"] = dict(probe.json_schema)
        try:
            result = model.chat(list(probe.messages), **options)
            ok, got = _score(probe, result)
        except phi3.Phi3Error as exc:
            ok, got = False, f"error: {exc}"
        answers.append(
            {
                "task": probe.task,
                "prompt": probe.messages[-1]["content"],
                "expected": probe.expected,
                "got": got,
                "ok": ok,
            }
        )
    engine, device = model.engine, model.device
    model.close()
    return {"row": row, "engine": engine, "device": device, "load_s": round(load_s, 1), "answers": answers}


def render(results: dict[str, Any]) -> str:
    tasks: list[str] = []
    for row in results["rows"]:
        for answer in row.get("answers", []):
            if answer["task"] not in tasks:
                tasks.append(answer["task"])
    lines = [
        "# The smoke model on held-out synthetic prompts",
        "",
        "Written by `python benchmarks/smoke_accuracy.py` from its raw results (`SMOKE_ACCURACY.json`,",
        "every probe's answer). The smoke model is a toy Phi-3 (about a million parameters) trained on a",
        "synthetic corpus (`phi3.smoke.corpus`); the probes are prompts that are not in that corpus, decoded",
        "greedily through `Model.chat` and scored by exact match. Tool rows use phi3's tool path (tool_choice",
        "auto, constrained JSON); the json row uses a JSON Schema.",
        "",
        f"Run {results['date']} on {results['machine']}, smoke model sha256 `{results['model_revision'][:19]}`.",
        "",
        "| backend:precision | engine (device) | " + " | ".join(tasks) + " | all |",
        "| --- | --- | " + " | ".join("---:" for _ in tasks) + " | ---: |",
    ]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"| {row['row']} | not run: {row['error']} | " + " | ".join("" for _ in tasks) + " | |")
            continue
        by_task: dict[str, list[bool]] = defaultdict(list)
        for answer in row["answers"]:
            by_task[answer["task"]].append(answer["ok"])
        cells = [f"{sum(by_task[t])}/{len(by_task[t])}" if by_task[t] else "" for t in tasks]
        total = [a["ok"] for a in row["answers"]]
        lines.append(
            f"| {row['row']} | {row['engine']} ({row['device']}) | "
            + " | ".join(cells)
            + f" | **{100 * sum(total) / len(total):.0f} %** ({sum(total)}/{len(total)}) |"
        )
    lines += ["", "## Answers that missed", ""]
    for row in results["rows"]:
        for answer in row.get("answers", []):
            if not answer["ok"]:
                where = f"{row['row']} · {answer['task']} · {answer['prompt']!r}"
                lines.append(f"- {where}: expected `{answer['expected']}`, got `{answer['got']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="BACKEND:PRECISION,... (default: all)")
    parser.add_argument("--raw", type=Path, default=HERE / "SMOKE_ACCURACY.json")
    parser.add_argument("--output", type=Path, default=HERE / "SMOKE_ACCURACY.md")
    parser.add_argument("--render", action="store_true", help="only rewrite --output from --raw")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_row(args.worker)))
        return 0
    if not args.render:
        import reporting  # benchmarks/reporting.py: the run's metadata, as every report records it

        import phi3
        from phi3.cache import phi3_home
        from phi3.sources import resolve_model

        meta = reporting.run_metadata("smoke_accuracy.py", argv, reporting.load_average())

        rows = []
        for row in args.rows.split(","):
            print(f"{row} ...", file=sys.stderr, flush=True)
            done = subprocess.run(
                [sys.executable, __file__, "--worker", row], capture_output=True, text=True, timeout=1800, check=False
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"row": row, "error": last[:200]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{row}: {rows[-1].get('error') or 'done'}", file=sys.stderr, flush=True)
        results = {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.system()} {platform.machine()}, {platform.python_version()}",
            "phi3": phi3.__version__,
            "model_revision": resolve_model("smoke", phi3_home()).revision,
            "rows": rows,
            "run": reporting.finish(meta),
        }
        args.raw.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    results = json.loads(args.raw.read_text(encoding="utf-8"))
    args.output.write_text(render(results), encoding="utf-8")
    print(args.output.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
