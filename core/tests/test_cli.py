"""The phi3 CLI, run for real in subprocesses against the reference backend distribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import phi3

pytestmark = pytest.mark.usefixtures("reference_installed")


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


def test_version(run_phi3: Any) -> None:
    done = run_phi3("--version")
    assert done.returncode == 0 and phi3.__version__ in done.stdout and "plugin API 1" in done.stdout


def test_python_dash_m_and_help(run_phi3: Any) -> None:
    done = run_phi3("--help")
    assert done.returncode == 0
    for command in ("list-backends", "devices", "quantize", "generate", "chat", "cache"):
        assert command in done.stdout


def test_list_backends_json_shape(run_phi3: Any) -> None:
    data = json.loads(run_phi3("list-backends", "--json").stdout)
    assert data["plugin_api_version"] == phi3.PLUGIN_API_VERSION
    ref = next(b for b in data["backends"] if b["name"] == "reference")
    assert ref["status"] == "available" and ref["distribution"] == "phi3-reference-backend"
    assert ref["precisions"] == ["fp32", "bf16"] and ref["devices"][0]["name"] == "cpu"


def test_devices(run_phi3: Any) -> None:
    done = run_phi3("devices", "--json")
    assert done.returncode == 0
    ref = next(b for b in json.loads(done.stdout)["backends"] if b["backend"] == "reference")
    assert ref["devices"][0]["kind"] == "cpu"


def test_generate_streams_and_reports(run_phi3: Any, tiny_phi3: Path, tmp_path: Path) -> None:
    done = run_phi3("generate", str(tiny_phi3), "Hello", "-b", "reference", "-p", "fp32", "-n", "6", "--ignore-eos")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "reference/transformers on cpu" in done.stderr and "6 new tokens" in done.stderr
    assert "tokens/s" in done.stderr
    assert list(tmp_path.iterdir()) == [] or all(p.name == "phi3-home" for p in tmp_path.iterdir())


def test_generate_json(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3(
        "generate", str(tiny_phi3), "Hello", "-b", "reference", "-p", "fp32", "-n", "4", "--ignore-eos", "--json"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["new_tokens"] == 4 and data["backend"] == "reference" and data["device"] == "cpu"
    assert data["decode_tokens_per_s"] > 0 and data["prompt_tokens"] > 4  # chat template applied


def test_generate_reads_stdin_and_raw_mode(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3(
        "generate",
        str(tiny_phi3),
        "-",
        "--raw",
        "-b",
        "reference",
        "-p",
        "fp32",
        "-n",
        "3",
        "--ignore-eos",
        "--json",
        input="Hello",
    )
    raw = json.loads(done.stdout)
    templated = json.loads(
        run_phi3(
            "generate",
            str(tiny_phi3),
            "-",
            "-b",
            "reference",
            "-p",
            "fp32",
            "-n",
            "3",
            "--ignore-eos",
            "--json",
            input="Hello",
        ).stdout
    )
    assert raw["new_tokens"] == 3
    assert raw["prompt_tokens"] < templated["prompt_tokens"]  # no <|user|> ... <|assistant|> around it


def test_chat_over_a_pipe_keeps_history(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3(
        "chat",
        str(tiny_phi3),
        "-b",
        "reference",
        "-p",
        "fp32",
        "-n",
        "3",
        "--ignore-eos",
        input="first question\nsecond question\n/exit\nnever sent\n",
    )
    assert done.returncode == 0, done.stderr
    prompts = [int(line.split("]")[1].split()[0]) for line in done.stderr.splitlines() if "prompt +" in line]
    assert len(prompts) == 2
    assert prompts[1] > prompts[0] + 3  # the second turn carries the first question and answer


def test_user_errors_exit_1_with_one_line(run_phi3: Any, tiny_phi3: Path) -> None:
    cases = [
        (["generate", str(tiny_phi3), "hi", "-b", "nope"], "no backend named 'nope'"),
        (["generate", str(tiny_phi3), "hi", "-b", "reference", "-p", "fp32", "--top-p", "3"], "top_p"),
        (["generate", str(tiny_phi3), "hi", "-b", "reference", "-p", "fp32", "-d", "GPU"], "devices present: cpu"),
        (["generate", "microsoft/Phi-3-mini-4k-instruct", "hi", "-b", "reference", "-p", "fp32"], "local folder"),
        (["generate", str(tiny_phi3), "hi", "-b", "reference", "-p", "fp32", "-O", "bogus=1"], "bogus"),
    ]
    for args, fragment in cases:
        done = run_phi3(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("Error: ") and fragment in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(run_phi3: Any) -> None:
    assert run_phi3("generate").returncode == 2
    assert run_phi3("generate", "m", "p", "-O", "novalue").returncode == 2
    assert run_phi3("no-such-command").returncode == 2


def test_quantize_and_cache_commands(run_phi3: Any, tiny_phi3: Path, tmp_path: Path) -> None:
    built = run_phi3("quantize", str(tiny_phi3), "-b", "reference", "-p", "bf16", "--json")
    assert built.returncode == 0, built.stderr
    key = json.loads(built.stdout)["manifest"]["key"]
    listed = json.loads(run_phi3("cache", "list", "--json").stdout)
    assert key in [a["key"] for a in listed["artifacts"]]
    assert run_phi3("cache", "rm", "zzzz").returncode == 1
    removed = run_phi3("cache", "rm", key[:8])
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert key not in [a["key"] for a in json.loads(run_phi3("cache", "list", "--json").stdout)["artifacts"]]
    assert run_phi3("cache", "prune").returncode == 0

    out = tmp_path / "exported"
    done = run_phi3("quantize", str(tiny_phi3), "-b", "reference", "-p", "fp32", "-o", str(out))
    assert done.returncode == 0 and (out / "phi3-manifest.json").is_file()
    answer = run_phi3("generate", str(out), "Hi", "-n", "2", "--ignore-eos", "--json")
    assert json.loads(answer.stdout)["backend"] == "reference"


def test_smoke_model_runs_end_to_end(run_phi3: Any) -> None:
    done = run_phi3("chat", "smoke", "-b", "reference", "-p", "fp32", "-n", "5", input="Hi there\n")
    assert done.returncode == 0, done.stderr
    assert "5 new tokens" in done.stderr or "eos" in done.stderr
