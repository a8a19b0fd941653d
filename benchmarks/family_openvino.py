"""Family quality of phi3-openvino and phi3-npu: every tiny catalogue layout, every precision.

Writes the raw results to ``benchmarks/FAMILY_OPENVINO.json`` (with the run's metadata: commit, command,
CPU, versions) and renders ``benchmarks/FAMILY_OPENVINO.md`` from that JSON alone (``--render``
re-creates it). Quality, not timing: the machine's load does not change these figures, so a busy
machine is recorded, not refused. For each variant of :data:`phi3.testing.variants.VARIANTS`
(tiny checkpoints with each real config's layout and discriminating weights):

- greedy parity, per engine: 32 greedy ids on each parity case that applies (short, longrope_prompt,
  longrope_decode, past_window), the new token where they first differ from transformers fp32
  (``exact`` when they never do), fp16 artifacts run with ``INFERENCE_PRECISION_HINT=f32``;
- teacher-forced quality of each precision's IR (fp16, int8, int4; through optimum-intel, which
  exposes logits, via ``phi3_openvino.api.ir_logprobs``): mean KL(reference || artifact) in
  nats/token and top-1 agreement, over the longest applicable prompt plus the reference's 32 tokens;
  the same for phi3-npu's int8/int4 genai artifacts (its NPU recipe).

This is what ``tests/test_family_parity.py`` of both plugins asserts, as numbers rather than pass/fail.
Run: ``.venv/bin/python benchmarks/family_openvino.py`` (~5 min on 2 cores; artifacts in a temporary
phi3 home). Not part of ``benchmarks/run.py``: that one measures speed on one (Phi-3-mini-shaped) model.
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

F32 = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}
ENGINES = (("openvino", "genai"), ("openvino", "optimum"), ("npu", "genai"))
PRECISIONS = ("fp16", "int8", "int4")
NPU_PRECISIONS = ("int8", "int4")
NEW = 32


def greedy_row(model_dir: Path, variant: str, backend: str, engine: str) -> dict[str, str]:
    import phi3
    from phi3.testing.parity import CASES, case_applies, parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids

    row: dict[str, str] = {}
    options: dict[str, Any] = {"backend": backend, "engine": engine, "device": "CPU", "precision": "fp16", **F32}
    for case in CASES:
        if not case_applies(variant, case):
            continue
        prompt = parity_prompt(model_dir, variant, case)
        expected = reference_greedy_ids(model_dir, input_ids=encode_prompt(model_dir, prompt), max_new_tokens=NEW)
        with phi3.load(model_dir, **options) as model:  # a fresh model per case: no state carried over
            got = list(model.generate(prompt, max_new_tokens=NEW, ignore_eos=True).token_ids)
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
        row[case] = "exact" if got == expected else f"differs at token {first}"
    return row


def teacher_forced(model_dir: Path, variant: str, precision: str, backend: str = "openvino") -> tuple[float, float]:
    """KL and top-1 of ``backend``'s artifact (phi3-openvino's recipe, or phi3-npu's NPU recipe for its
    genai engine), measured on the IR itself through ``phi3_openvino.api.ir_logprobs``."""
    import numpy as np

    import phi3
    from phi3.testing.parity import case_applies, parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_logprobs
    from phi3_openvino.api import ir_logprobs

    case = "longrope_prompt" if case_applies(variant, "longrope_prompt") else "short"
    prompt_ids = encode_prompt(model_dir, parity_prompt(model_dir, variant, case))
    ids = prompt_ids + reference_greedy_ids(model_dir, input_ids=prompt_ids, max_new_tokens=NEW)
    expected = reference_logprobs(model_dir, ids).astype(np.float64)
    artifact = phi3.quantize(model_dir, backend=backend, precision=precision, engine="genai")
    got = ir_logprobs(artifact.path, ids).astype(np.float64)
    rows = slice(len(prompt_ids) - 1, len(ids) - 1)
    p = np.exp(expected[rows])
    kl = float(np.mean(np.sum(p * (expected[rows] - got[rows]), axis=-1)))
    top1 = float(np.mean(got[rows].argmax(-1) == expected[rows].argmax(-1)))
    return kl, top1


def source_versions() -> dict[str, str]:
    """The plugins' versions from their sources (what the artifact cache key uses), not an editable
    install's possibly stale metadata."""
    from phi3_npu import __version__ as npu_version
    from phi3_openvino import __version__ as openvino_version

    return {"phi3-openvino": openvino_version, "phi3-npu": npu_version}


def _quality_table(results: dict[str, Any], key: str) -> list[str]:
    precisions = list(next(iter(results[key].values()), {}))  # the precisions measured, as the raw results hold them
    lines = [
        "| variant | " + " | ".join(f"{p} KL | {p} top-1" for p in precisions) + " |",
        "|---|" + "---|---|" * len(precisions),
    ]
    for variant in results["variants"]:
        cells = []
        for precision in precisions:
            kl, top1 = results[key][variant][precision]
            cells += [f"{kl:.4f}", f"{100 * top1:.1f} %"]
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    return lines


def _greedy_table(results: dict[str, Any]) -> list[str]:
    cases = results["cases"]
    lines = ["| variant | engine | " + " | ".join(cases) + " |", "|---|---|" + "---|" * len(cases)]
    for variant in results["variants"]:
        for label, row in results["greedy"][variant].items():
            lines.append(f"| `{variant}` | {label} | " + " | ".join(row.get(case, "n/a") for case in cases) + " |")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Family quality: phi3-openvino and phi3-npu",
        "",
        "Rendered by `python benchmarks/family_openvino.py --render` from `FAMILY_OPENVINO.json`; do not edit.",
        "Tiny checkpoints with each catalogue entry's layout (`phi3.testing.variants`), discriminating weights;",
        "CPU, f32 inference (see the script's docstring).",
        "",
        reporting.provenance(results, "family_openvino.py"),
        "",
        f"## Greedy parity with transformers fp32 (fp16 artifacts, {results['new_tokens']} tokens, a fresh model "
        "per case)",
        "",
        *_greedy_table(results),
        "",
        "## Teacher-forced quality of each precision's IR (phi3-openvino artifacts, f32 on CPU, optimum-intel)",
        "",
        f"Mean KL(reference || artifact) in nats/token and top-1 agreement over the {results['new_tokens']} "
        "continuation tokens",
        "(default quantization options: int8 asymmetric per channel; int4 symmetric, ratio 0.6, group size auto).",
        "",
        *_quality_table(results, "quality"),
        "",
        "## Teacher-forced quality of phi3-npu's genai artifacts (the NPU recipe)",
        "",
        "The same measure on the IRs phi3-npu exports for the NPU (int8 symmetric per channel; int4",
        "symmetric, ratio 1.0, every eligible weight in int4): what the weights lose, whichever device runs them.",
        "",
        *_quality_table(results, "npu_quality"),
        "",
        "## Versions",
        "",
        "| package | version |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value} |" for name, value in sorted(results["source_versions"].items())]
    lines += ["", reporting.versions_line(results)]
    return "\n".join(lines) + "\n"


def measure() -> dict[str, Any]:
    """Every variant: greedy parity per engine, teacher-forced quality per precision (openvino and npu)."""
    from phi3.testing.parity import CASES
    from phi3.testing.tiny_model import make_tiny_phi3
    from phi3.testing.variants import VARIANTS

    greedy: dict[str, dict[str, dict[str, str]]] = {}
    quality: dict[str, dict[str, tuple[float, float]]] = {}
    npu_quality: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="phi3-family-") as scratch:
        os.environ["PHI3_HOME"] = str(Path(scratch) / "home")
        for variant in VARIANTS:
            start = time.monotonic()
            model_dir = make_tiny_phi3(Path(scratch) / variant, variant=variant)
            greedy[variant] = {f"{b}/{e}": greedy_row(model_dir, variant, b, e) for b, e in ENGINES}
            quality[variant] = {p: teacher_forced(model_dir, variant, p) for p in PRECISIONS}
            npu_quality[variant] = {p: teacher_forced(model_dir, variant, p, "npu") for p in NPU_PRECISIONS}
            print(f"{variant}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    return {
        "cases": list(CASES),
        "variants": list(VARIANTS),
        "new_tokens": NEW,
        "greedy": greedy,
        "quality": quality,
        "npu_quality": npu_quality,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "FAMILY_OPENVINO.md")
    parser.add_argument("--render", action="store_true", help="re-create the report from the raw JSON beside it")
    args = parser.parse_args(argv)
    if args.render:
        reporting.rerender(args.output, render)
        return 0
    meta = reporting.run_metadata("family_openvino.py", argv, reporting.load_average())
    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()
    os.environ["HF_HUB_OFFLINE"] = "1"
    results = {**meta, **measure(), "source_versions": source_versions()}
    reporting.finish(results)
    reporting.write(args.output, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
