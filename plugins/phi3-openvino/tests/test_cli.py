"""The issue's "done means", through the real ``phi3`` CLI in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import phi3


def test_list_backends_shows_openvino_available_on_cpu(run_phi3: Any) -> None:
    done = run_phi3("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    backend = {b["name"]: b for b in json.loads(done.stdout)["backends"]}["openvino"]
    assert backend["status"] == "available"
    assert "CPU" in [d["name"] for d in backend["devices"]]
    assert backend["default_engine"] == "genai"
    assert {"openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf"} <= set(
        backend["library_versions"]
    )


def test_quantize_int4_prints_a_parseable_manifest(
    run_phi3: Any, tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]
) -> None:
    """--json output stays JSON although NNCF prints tables (sent to stderr); a cache hit here."""
    done = run_phi3("quantize", str(tiny_phi3), "-b", "openvino", "-p", "int4", "--json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["from_cache"] is True
    manifest = printed["manifest"]
    assert manifest["precision"] == "int4" and manifest["backend"] == "openvino"
    assert manifest["key"] == artifacts["int4"].key
    assert manifest["context_length"] == 512


def test_quantize_progress_and_output_folder(run_phi3: Any, tiny_phi3: Path, tmp_path: Path) -> None:
    """A fresh export (to -o, outside the cache) shows its stages on stderr and nothing on stdout."""
    out = tmp_path / "fp16-artifact"
    done = run_phi3("quantize", str(tiny_phi3), "-b", "openvino", "-p", "fp16", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "exporting" in done.stderr and "converting the tokenizer" in done.stderr
    assert "Weight compression" not in done.stdout
    assert (out / "openvino_model.xml").is_file() and (out / "phi3-manifest.json").is_file()


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_generate_hi(run_phi3: Any, tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str) -> None:
    done = run_phi3(
        "generate", str(tiny_phi3), "Hi", "-b", "openvino", "-e", engine, "-n", "8", "--ignore-eos", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["backend"], result["engine"], result["device"]) == ("openvino", engine, "CPU")
    assert result["new_tokens"] == 8 and result["precision"] == "int4"


def test_errors_are_one_line_without_traceback(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3("quantize", str(tiny_phi3), "-b", "openvino", "-p", "int4", "-O", "group_size=128")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "group_size 128 does not divide the model's hidden size 64" in done.stderr
