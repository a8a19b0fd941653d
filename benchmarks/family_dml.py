"""Family quality of phi3-dml (ONNX Runtime GenAI, CPU provider): every tiny catalogue layout.

Writes the raw results to ``benchmarks/FAMILY_DML.json`` (with the run's metadata: commit, command, CPU,
versions) and renders ``benchmarks/FAMILY_DML.md`` from that JSON alone (``--render`` re-creates it);
quality, not timing, so a busy machine is recorded, not refused. The report is the phi3-dml twin of
``FAMILY_OPENVINO.md``: for each variant
of :data:`phi3.testing.variants.VARIANTS` (tiny checkpoints with each real config's layout and
discriminating weights) and each graph phi3-dml builds,

- greedy parity: 32 greedy ids on each parity case that applies (short, longrope_prompt,
  longrope_decode, past_window), the new token where they first differ from transformers fp32
  (``exact`` when they never do), or the phi3 error a refused layout gets;
- teacher-forced quality: mean KL(reference || artifact) in nats/token and top-1 agreement over the
  longest applicable prompt plus the reference's 32 tokens, through ``phi3_dml.api``.

This is what ``plugins/phi3-dml/tests/test_family_parity.py`` asserts, as numbers rather than
pass/fail. Run: ``.venv/bin/python benchmarks/family_dml.py`` (a few minutes on 2 cores; artifacts
in a temporary phi3 home).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
import reporting  # noqa: E402

NEW = 32
GREEDY_GRAPHS = (
    ("fp32 cpu graph", "fp32", "cpu"),
    ("fp16 dml graph", "fp16", "dml"),
    ("fp16 cpu graph", "fp16", "cpu"),
)
"""(label, precision, execution_provider the graph is built for); all run on the CPU provider here."""
KL_GRAPHS = (
    ("fp32 cpu", "fp32", "cpu"),
    ("fp16 dml", "fp16", "dml"),
    ("int8 cpu", "int8", "cpu"),
    ("int4 cpu", "int4", "cpu"),
    ("int4 dml", "int4", "dml"),
)


def _load(model_dir: Path, precision: str, provider: str) -> Any:
    import phi3

    return phi3.load(model_dir, backend="dml", device="cpu", precision=precision, execution_provider=provider)


def greedy_row(model_dir: Path, variant: str, precision: str, provider: str) -> dict[str, str]:
    import phi3
    from phi3.testing.parity import CASES, case_applies, parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids

    row: dict[str, str] = {}
    for case in CASES:
        if not case_applies(variant, case):
            continue
        prompt = parity_prompt(model_dir, variant, case)
        expected = reference_greedy_ids(model_dir, input_ids=encode_prompt(model_dir, prompt), max_new_tokens=NEW)
        try:
            with _load(model_dir, precision, provider) as model:  # a fresh model per case
                got = list(model.generate(prompt, max_new_tokens=NEW, ignore_eos=True).token_ids)
        except phi3.Phi3Error as exc:
            row[case] = f"refused ({type(exc).__name__})"
            continue
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
        row[case] = "exact" if got == expected else f"differs at token {first}"
    return row


def teacher_forced(model_dir: Path, variant: str, precision: str, provider: str) -> dict[str, Any]:
    """``{"kl", "top1"}``, or ``{"refused": the phi3 error's name}``."""
    import numpy as np

    import phi3
    from phi3.testing.parity import case_applies, parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_logprobs
    from phi3_dml.api import teacher_forced_logprobs

    case = "longrope_prompt" if case_applies(variant, "longrope_prompt") else "short"
    prompt_ids = encode_prompt(model_dir, parity_prompt(model_dir, variant, case))
    ids = prompt_ids + reference_greedy_ids(model_dir, input_ids=prompt_ids, max_new_tokens=NEW)
    expected = reference_logprobs(model_dir, ids).astype(np.float64)
    try:
        with _load(model_dir, precision, provider) as model:
            got = teacher_forced_logprobs(model, ids).astype(np.float64)
    except phi3.Phi3Error as exc:
        return {"refused": type(exc).__name__}
    rows = slice(len(prompt_ids) - 1, len(ids) - 1)
    p = np.exp(expected[rows])
    kl = float(np.mean(np.sum(p * (expected[rows] - got[rows]), axis=-1)))
    top1 = float(np.mean(got[rows].argmax(-1) == expected[rows].argmax(-1)))
    return {"kl": kl, "top1": top1}


def quality_cell(measured: dict[str, Any]) -> str:
    if "refused" in measured:
        return f"refused ({measured['refused']})"
    return f"{round(measured['kl'], 4) + 0.0:.4f} / {100 * measured['top1']:.1f} %"  # + 0.0: no "-0.0000"


def render(results: dict[str, Any]) -> str:
    cases = results["cases"]
    lines = [
        "# Family quality: phi3-dml (ONNX Runtime GenAI, CPU provider)",
        "",
        "Rendered by `python benchmarks/family_dml.py --render` from `FAMILY_DML.json`; do not edit.",
        "Tiny checkpoints with each catalogue entry's layout (`phi3.testing.variants`), discriminating weights.",
        "The dml graphs (DirectML's) run under the CPU provider here; a refused layout names the phi3 error",
        "(the plugin README says why).",
        "",
        reporting.provenance(results, "family_dml.py"),
        "",
        f"## Greedy parity with transformers fp32 ({results['new_tokens']} tokens, a fresh model per case)",
        "",
        "| variant | graph | " + " | ".join(cases) + " |",
        "|---|---|" + "---|" * len(cases),
    ]
    for variant in results["variants"]:
        for label, row in results["greedy"][variant].items():
            lines.append(f"| `{variant}` | {label} | " + " | ".join(row.get(case, "n/a") for case in cases) + " |")
    labels = list(next(iter(results["quality"].values()), {}))  # the graphs measured, as the raw results hold them
    lines += [
        "",
        f"## Teacher-forced quality (mean KL nats/token / top-1 agreement, {results['new_tokens']} continuation "
        "tokens)",
        "",
        "Default quantization options (int4: block 32, accuracy level 4).",
        "",
        "| variant | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for variant in results["variants"]:
        quality = results["quality"][variant]
        lines.append(f"| `{variant}` | " + " | ".join(quality_cell(quality[label]) for label in labels) + " |")
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in sorted(results["source_versions"].items())]
    lines += ["", reporting.versions_line(results)]
    return "\n".join(lines) + "\n"


def measure(chosen: list[str]) -> dict[str, Any]:
    """Greedy parity per graph and teacher-forced quality per graph, for each chosen variant."""
    from phi3.testing.parity import CASES
    from phi3.testing.tiny_model import make_tiny_phi3

    greedy: dict[str, dict[str, dict[str, str]]] = {}
    quality: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="phi3-family-dml-") as scratch:
        os.environ["PHI3_HOME"] = str(Path(scratch) / "home")
        for variant in chosen:
            start = time.monotonic()
            model_dir = make_tiny_phi3(Path(scratch) / variant, variant=variant)
            greedy[variant] = {label: greedy_row(model_dir, variant, p, ep) for label, p, ep in GREEDY_GRAPHS}
            quality[variant] = {label: teacher_forced(model_dir, variant, p, ep) for label, p, ep in KL_GRAPHS}
            print(f"{variant}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return {"cases": list(CASES), "variants": chosen, "new_tokens": NEW, "greedy": greedy, "quality": quality}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "FAMILY_DML.md")
    parser.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    parser.add_argument("--render", action="store_true", help="re-create the report from the raw JSON beside it")
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.output, render)
        return 0
    meta = reporting.run_metadata("family_dml.py", argv, reporting.load_average())
    os.environ["HF_HUB_OFFLINE"] = "1"
    from phi3.testing.variants import VARIANTS
    from phi3_dml import __version__ as dml_version

    chosen = [name for name in args.variants.split(",") if name] or list(VARIANTS)
    results = {**meta, **measure(chosen), "source_versions": {"phi3-dml": dml_version}}
    reporting.finish(results)
    if len(chosen) < len(VARIANTS):
        print("a subset was measured: not writing the report", file=sys.stderr)
        print(render(results), file=sys.stderr)
        return 0
    reporting.write(args.output, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
