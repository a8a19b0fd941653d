"""Every committed benchmark report is its script's rendering of the raw results committed beside it.

For each report in :data:`RENDERERS`, ``<STEM>.json`` is rendered by its script's ``render`` and
compared with the committed ``<STEM>.md`` byte for byte (what ``python benchmarks/<script>.py --render``
writes). A Markdown file in benchmarks/ that is neither listed there nor in :data:`NOT_REPORTS` fails,
so nothing is skipped silently.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RENDERERS: dict[str, str] = {
    "STRUCTURED_RESULTS": "structured_bench",
    "SERVER_SOAK": "server_soak",
    "SMOKE_ACCURACY": "smoke_accuracy",
    "RESULTS": "report",
    "SERVER_RESULTS": "server_bench",
    "RAY_RESULTS": "ray_bench",
    "TUNING": "tune",
    "FAMILY_OPENVINO": "family_openvino",
    "FAMILY_DML": "family_dml",
    "LLAMACPP_OVERHEAD": "llamacpp_overhead",
    "ADAPTERS": "adapter_bench",
    "PROFILE": "decode_profile",
}
"""Report stem -> the module in benchmarks/ whose ``render(results)`` writes it from ``<stem>.json``."""
NOT_REPORTS = ("README", "TUNING-decisions")
"""Markdown in benchmarks/ that no script renders (docs; hand-written notes a report includes)."""


def _render(module_name: str) -> Callable[[dict[str, Any]], str]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(module_name).render  # type: ignore[no-any-return]
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_every_report_is_listed() -> None:
    stems = {path.stem for path in BENCHMARKS.glob("*.md")} - set(NOT_REPORTS)
    assert stems == set(RENDERERS)


@pytest.mark.parametrize("stem", sorted(RENDERERS))
def test_the_report_is_rendered_from_its_raw_results(stem: str) -> None:
    raw = json.loads((BENCHMARKS / f"{stem}.json").read_text(encoding="utf-8"))
    rendered = _render(RENDERERS[stem])(raw)
    committed = (BENCHMARKS / f"{stem}.md").read_text(encoding="utf-8")
    assert rendered == committed, f"benchmarks/{stem}.md differs from its script's rendering of {stem}.json"


def test_the_comparison_can_fail() -> None:
    """A changed figure in the raw results changes the rendering."""
    raw = json.loads((BENCHMARKS / "STRUCTURED_RESULTS.json").read_text(encoding="utf-8"))
    raw["rows"][0]["free"][0]["decode_tok_s"] += 1000.0
    committed = (BENCHMARKS / "STRUCTURED_RESULTS.md").read_text(encoding="utf-8")
    assert _render("structured_bench")(raw) != committed


def _module(name: str) -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_quiet_rule_is_the_start_load() -> None:
    reporting = _module("reporting")
    assert reporting.is_quiet([0.5, 3.0, 9.0])
    assert not reporting.is_quiet([0.51, 0.0, 0.0])
    assert not reporting.is_quiet(None)
    assert reporting.machine_state({"start": [2.0], "end": [0.1]}).startswith("**a machine shared")


def _row(key: str, label: str, kind: str, precision: str, tps: list[float]) -> dict[str, Any]:
    """A measured row as run.py records it: one run per repeat at these decode rates, TTFT 50 ms, 1 MiB a token."""
    runs = [{"decode_tokens_per_s": v, "ttft_s": 0.05, "repeat": i + 1} for i, v in enumerate(tps)]
    weights = {"total_bytes": 4e6, "embedding_bytes": 1e6, "per_token_bytes": 2**20, "how": "test"}
    stat = {"median": sorted(tps)[len(tps) // 2], "min": min(tps), "max": max(tps)}
    summary = {"decode_tokens_per_s": stat, "ttft_s": {"median": 0.05, "min": 0.05, "max": 0.05}}
    return {
        "key": key,
        "label": label,
        "kind": kind,
        "precision": precision,
        "error": None,
        "runs": runs,
        "summary": summary,
        "weights": weights,
    }


def test_the_frontier_joins_speed_and_quality_per_row() -> None:
    """Each phi3 row gets its backend's KL, each llama.cpp row its file type's; direct rows are not points."""
    report = _module("report")
    results = {
        "bandwidth": {"read_bytes_per_s": 100 * 2**20},
        "rows": [
            _row("phi3:openvino/genai", "phi3 openvino/genai", "phi3", "int4", [40.0]),
            _row("direct:ov_genai", "openvino_genai.LLMPipeline", "direct", "int4", [41.0]),
            _row("peer:llama_cpp_q4_k_m", "llama.cpp Q4_K_M (llama-cpp-python)", "peer", "Q4_K_M", [50.0]),
        ],
        "parity": {
            "results": [
                {"backend": "openvino", "precision": "int4", "mean_kl": 0.13, "top1_agreement": 0.5},
                {"backend": "llama.cpp", "precision": "Q4_K_M", "mean_kl": 0.05, "top1_agreement": 0.7},
                {"backend": "llama.cpp", "precision": "Q4_0", "mean_kl": 0.2, "top1_agreement": 0.4},
            ]
        },
    }
    points = {p["label"]: p for p in report.frontier_rows(results)}
    assert set(points) == {"phi3 openvino/genai", "llama.cpp Q4_K_M (llama-cpp-python)"}
    assert points["phi3 openvino/genai"]["mean_kl"] == 0.13
    assert points["llama.cpp Q4_K_M (llama-cpp-python)"]["mean_kl"] == 0.05
    assert points["llama.cpp Q4_K_M (llama-cpp-python)"]["fraction"] == 0.5  # 50 tok/s of a 100 tok/s ceiling
    assert points["phi3 openvino/genai"]["ttft_ms"] == 50.0
    # the frontier rule: Q4_K_M is faster and closer to fp32 than openvino's int4, so only it is on the frontier
    assert points["llama.cpp Q4_K_M (llama-cpp-python)"]["on_frontier"] is True
    assert points["phi3 openvino/genai"]["on_frontier"] is False


def test_the_speed_first_recipe_is_held_to_q4_0_speed_and_quality() -> None:
    """The ``-O recipe=fast`` row gets its own KL (not the default recipe's) and two targets against llama.cpp
    Q4_0: decode >= 1x in every repeat, KL <= Q4_0's; each can come out missed."""
    report = _module("report")

    def results(fast_tps: list[float], fast_kl: float) -> dict[str, Any]:
        return {
            "bandwidth": {"read_bytes_per_s": 100 * 2**20},
            "rows": [
                _row("phi3:openvino/genai", "phi3 openvino/genai", "phi3", "int4", [40.0, 40.0, 40.0]),
                _row(
                    report.SPEED_FIRST_KEY,
                    "phi3 openvino/genai -O recipe=fast",
                    "phi3",
                    "int4 recipe=fast",
                    fast_tps,
                ),
                _row("peer:llama_cpp", "llama.cpp Q4_0 (llama-cpp-python)", "peer", "Q4_0", [45.0, 45.0, 45.0]),
            ],
            "parity": {
                "results": [
                    {"backend": "openvino", "precision": "int4", "mean_kl": 0.12, "top1_agreement": 0.5},
                    {"backend": "openvino", "precision": "int4 recipe=fast", "mean_kl": fast_kl, "top1_agreement": 0.4},
                    {"backend": "llama.cpp", "precision": "Q4_0", "mean_kl": 0.18, "top1_agreement": 0.3},
                ]
            },
        }

    def verdicts(raw: dict[str, Any]) -> dict[str, str]:
        measured = [r for r in raw["rows"] if r["runs"]]
        rows, _ = report._speed_first_targets(raw, measured, report._row(measured, "peer:llama_cpp"))
        return {cells[0].split(",")[0]: cells[3] for cells in rows}

    good = results([50.0, 48.0, 52.0], 0.16)
    points = {p["label"]: p for p in report.frontier_rows(good)}
    assert points["phi3 openvino/genai -O recipe=fast"]["mean_kl"] == 0.16
    assert points["phi3 openvino/genai"]["mean_kl"] == 0.12
    assert verdicts(good) == {"decode": "met", "teacher-forced KL vs fp32": "met"}
    slow_and_far = results([50.0, 44.0, 30.0], 0.19)  # median 44 < 45, and above Q4_0's KL
    assert verdicts(slow_and_far) == {"decode": "**missed**", "teacher-forced KL vs fp32": "**missed**"}


FIXTURES = Path(__file__).resolve().parent / "benchmark_fixtures"


@pytest.mark.parametrize("stem", sorted(path.stem for path in FIXTURES.glob("*.json")))
def test_each_script_renders_its_own_raw_format(stem: str) -> None:
    """A smallest-shape noisy run of each script (tests/benchmark_fixtures) renders, the same twice, with no
    verdict: the start load was above the quiet limit."""
    raw = json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))
    runs = list(raw["backends"].values()) if stem == "TUNING" else [raw]  # TUNING.json: one run per backend
    assert all(run["load_average"]["start"][0] > 0.5 for run in runs)
    render = _render(RENDERERS[stem])
    text = render(raw)
    assert text.startswith("# ") and text == render(json.loads(json.dumps(raw)))
    assert "verdict" in text.lower() and not any(f"| {word} |" in text for word in ("met", "missed"))
