"""``phi3 bench`` on the tiny model with the reference backend: shape and consistency, never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3 import bench, plugins
from phi3.bench import BenchSettings, Stat, build_prompt, plan_targets, summarize
from phi3.errors import ConfigError

RUNS, PROMPT_TOKENS, NEW_TOKENS = 2, 12, 5


def _reference_installed() -> bool:
    from importlib.metadata import entry_points

    return "reference" in {ep.name for ep in entry_points(group="phi3")}


needs_distribution = pytest.mark.skipif(
    not _reference_installed(),
    reason="needs tests/distributions/phi3-reference-backend installed (the nox session does it)",
)


def _phi3(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHI3_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "phi3", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=900,
        check=False,
    )


def _has_matplotlib() -> bool:
    from importlib.util import find_spec

    return find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def chart_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-chart") / "sub" / "bench.png"


@pytest.fixture(scope="module")
def bench_json(
    phi3_home: Path, tiny_phi3: Path, chart_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One real `phi3 bench --json` run (plus --plot when matplotlib is there), shared by the tests."""
    if not _reference_installed():
        pytest.skip("needs the phi3-reference-backend distribution")
    cwd = tmp_path_factory.mktemp("bench-cwd")
    plot = ["--plot", str(chart_path)] if _has_matplotlib() else []
    done = _phi3(
        phi3_home,
        cwd,
        "bench",
        str(tiny_phi3),
        "--backends",
        "reference,nope",
        "-p",
        "fp32",
        "--runs",
        str(RUNS),
        "--prompt-tokens",
        str(PROMPT_TOKENS),
        "--new-tokens",
        str(NEW_TOKENS),
        "--json",
        *plot,
    )
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == [], "phi3 bench wrote into the working directory"
    data: dict[str, Any] = json.loads(done.stdout)
    return data


# -- end to end (subprocess) ------------------------------------------------------------------


@needs_distribution
def test_json_shape(bench_json: dict[str, Any], tiny_phi3: Path) -> None:
    assert set(bench_json) >= {"phi3_version", "settings", "prompt", "machine", "results", "unavailable"}
    settings = bench_json["settings"]
    assert settings["runs"] == RUNS and settings["new_tokens"] == NEW_TOKENS and settings["ignore_eos"] is True
    assert settings["prompt_tokens"] == PROMPT_TOKENS and settings["model"] == str(tiny_phi3)
    assert isinstance(bench_json["prompt"], str) and bench_json["prompt"].strip()
    [result] = bench_json["results"]
    assert (result["backend"], result["engine"], result["device"], result["precision"]) == (
        "reference",
        "transformers",
        "cpu",
        "fp32",
    )
    assert result["artifact"]["size_bytes"] > 0 and Path(result["artifact"]["path"]).is_dir()
    assert set(result["summary"]) == set(bench.METRICS)


@needs_distribution
def test_numbers_positive_and_consistent(bench_json: dict[str, Any]) -> None:
    [result] = bench_json["results"]
    runs = result["runs"]
    assert [r["round"] for r in runs] == list(range(1, RUNS + 1))
    for run in runs:
        assert run["new_tokens"] == NEW_TOKENS  # EOS suppressed: every run decodes the same count
        assert run["prompt_tokens"] == PROMPT_TOKENS  # the prompt is exactly as long as asked
        for metric in bench.METRICS:
            assert run[metric] > 0, (metric, run)
        assert run["ttft_s"] < run["total_s"]
        assert run["e2e_tokens_per_s"] == pytest.approx(NEW_TOKENS / run["total_s"])
        assert run["peak_rss_bytes"] > 50e6  # torch + a model: certainly more than 50 MB
    for metric, stat in result["summary"].items():
        assert stat["n"] == RUNS, metric
        assert 0 < stat["min"] <= stat["median"] <= stat["max"], (metric, stat)
        values = sorted(r[metric] for r in runs)
        assert stat["min"] == values[0] and stat["max"] == values[-1]


@needs_distribution
def test_unavailable_backends_are_listed_with_why(bench_json: dict[str, Any]) -> None:
    [missing] = bench_json["unavailable"]
    assert missing["backend"] == "nope" and "not installed" in missing["reason"]


@needs_distribution
def test_table_output_without_cold_loads(phi3_home: Path, tiny_phi3: Path, tmp_path: Path) -> None:
    done = _phi3(
        phi3_home,
        tmp_path,
        "bench",
        str(tiny_phi3),
        "-b",
        "reference,nope",
        "-e",
        "all",
        "-p",
        "fp32",
        "--runs",
        "1",
        "--no-cold",
        "--prompt-tokens",
        "8",
        "--new-tokens",
        "3",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("BACKEND/ENGINE"))
    for column in ("WARM LOAD s", "TTFT ms", "DECODE tok/s", "E2E tok/s", "PEAK RSS MB"):
        assert column in header
    row = next(line for line in lines if line.startswith("reference/transformers"))
    assert row.split()[1:3] == ["cpu", "fp32"]
    cold_column = header.index("COLD LOAD s")
    assert row[cold_column:].split()[0] == "-"  # --no-cold: not measured, shown as such
    assert any("not measured: nope" in line for line in lines)
    assert done.stderr == "" or "Traceback" not in done.stderr


@needs_distribution
def test_plot(bench_json: dict[str, Any], chart_path: Path) -> None:
    if not _has_matplotlib():
        pytest.skip('matplotlib is not installed (pip install "phi3-core[bench]")')
    assert chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_distribution
def test_user_errors_exit_1(phi3_home: Path, tiny_phi3: Path, tmp_path: Path) -> None:
    cases = [
        (["--runs", "0"], "runs must be"),
        (["-b", "nope"], "no backend can be benchmarked"),
        (["-b", "reference", "-e", "optimum"], "has none of the engines optimum"),
        (["-b", ",,,"], "the backend list ',,,' names nothing"),
        (["-b", " , "], "names nothing"),
        (["-b", "reference", "-e", ","], "the engine list"),
    ]
    for extra, fragment in cases:
        done = _phi3(phi3_home, tmp_path, "bench", str(tiny_phi3), "-p", "fp32", *extra)
        assert done.returncode == 1, (extra, done.stderr)
        assert done.stderr.startswith("Error: ") and fragment in done.stderr, done.stderr


@needs_distribution
def test_failing_target_is_reported_not_fatal(phi3_home: Path, tiny_phi3: Path, tmp_path: Path) -> None:
    done = _phi3(
        phi3_home,
        tmp_path,
        "bench",
        str(tiny_phi3),
        "-b",
        "reference",
        "-p",
        "int4",
        "--runs",
        "1",
        "--json",
        "--quiet",
    )
    assert done.returncode == 1  # nothing measured
    data = json.loads(done.stdout)
    assert data["results"] == []
    [failed] = data["unavailable"]
    assert failed["engine"] == "transformers" and "preparing failed" in failed["reason"]


# -- in process -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 16, 64, 200])
def test_build_prompt_is_exact(tiny_phi3: Path, n: int) -> None:
    from phi3.testing.reference import encode_prompt

    prompt = build_prompt(tiny_phi3, n)
    assert len(encode_prompt(tiny_phi3, prompt)) == n  # counted as transformers (and backends) count


def test_plan_targets() -> None:
    registry = plugins.get_registry()
    targets, missing = plan_targets(registry, "reference,nope", None, None)
    assert [(t.backend, t.engine, t.device) for t in targets] == [("reference", "transformers", "auto")]
    assert [m.backend for m in missing] == ["nope"]

    targets, missing = plan_targets(registry, ["reference"], "reference:transformers,genai", "cpu,GPU")
    assert [(t.engine, t.device) for t in targets] == [("transformers", "cpu"), ("transformers", "GPU")]
    assert [(m.engine, m.reason) for m in missing] == [("genai", "no requested backend has an engine of this name")]

    targets, missing = plan_targets(registry, "reference", "reference:bogus", None)
    assert targets == [] and missing[0].engine == "bogus" and "no engine 'bogus'" in missing[0].reason


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="runs"):
        BenchSettings(model="m", runs=0)
    with pytest.raises(ConfigError, match="new-tokens"):
        BenchSettings(model="m", new_tokens=1)
    with pytest.raises(ConfigError, match="prompt-tokens"):
        BenchSettings(model="m", prompt_tokens=True)  # type: ignore[arg-type]


def test_summarize_and_stat() -> None:
    runs = [{"ttft_s": 0.3}, {"ttft_s": 0.1}, {"ttft_s": 0.2, "decode_tokens_per_s": 5.0}]
    summary = summarize(runs)
    assert summary["ttft_s"] == {"median": 0.2, "min": 0.1, "max": 0.3, "n": 3}
    assert summary["decode_tokens_per_s"]["n"] == 1
    assert "cold_load_s" not in summary
    assert Stat.of([]) is None
    assert bench.format_stat(summary["ttft_s"], lambda v: f"{v:.1f}") == "0.2 (0.1-0.3)"
    assert bench.format_stat(None, str) == "-"


def test_a_run_cut_short_by_the_context_is_not_blamed_on_ignore_eos() -> None:
    """A 12-token prompt + 30 new tokens in a 32-token context: the context ran out, not the backend."""
    from phi3.bench.runner import _short_run_reason

    full = _short_run_reason({"new_tokens": 20, "prompt_tokens": 12}, {"context_length": 32}, 30)
    assert "do not fit the model's 32-token context" in full and "ignore_eos" not in full
    roomy = _short_run_reason({"new_tokens": 20, "prompt_tokens": 12}, {"context_length": 4096}, 30)
    assert "does not honour ignore_eos" in roomy
