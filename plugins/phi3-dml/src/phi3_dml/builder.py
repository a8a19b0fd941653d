"""``phi3_quantize``: the ONNX Runtime GenAI model builder, called from Python, into ``output_dir``.

Order of work, cheapest first, so a mistake costs milliseconds and not a build:
validate precision/provider/options (:mod:`phi3_dml.targets`), check the builder's dependencies are
importable, then run the builder in a child process (:mod:`phi3_dml._build_worker`), relaying its
"Reading layer N" lines as progress, then down-level the configs for old runtimes
(:mod:`phi3_dml.compat`). phi3 owns the temp folder, the manifest and the atomic rename; this
module writes only into ``output_dir`` (the builder's scratch folder is a subfolder, removed here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3 import probing
from phi3.errors import ArtifactError, BackendError, BackendUnavailableError, ModelNotFoundError
from phi3.types import Progress, QuantizeRequest

from phi3_dml import compat, probe, targets

SCRATCH = ".builder-scratch"
LAYER_LINE = re.compile(r"Reading (?:decoder )?layer (\d+)")
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception)\b.*")


def _source_config(source: Path) -> dict[str, Any]:
    try:
        data = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{source}/config.json is unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def _require_builder(installation: probe.Installation) -> str:
    """The builder's version; raise the install command if anything it imports is missing."""
    if installation.runtime is None:
        raise BackendUnavailableError(
            "onnxruntime-genai is not installed, so there is no model builder",
            hint=f"pip install {probe.DIRECTML_PACKAGE if probing.is_windows() else probe.CPU_PACKAGE}",
        )
    missing = [name for name in probe.BUILDER_MODULES if not probing.module_available(name)]
    if missing:
        raise BackendUnavailableError(
            f"quantizing needs the model builder's dependencies, missing: {', '.join(missing)}",
            hint='pip install "phi3-dml[build]" (loading and generating need none of them)',
        )
    return installation.runtime_version or "0"


def _failure(log: list[str], returncode: int) -> BackendError:
    if returncode < 0:
        reason = f"it was killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
    else:
        errors = [line.strip() for line in log if ERROR_LINE.match(line)]
        lines = [line.strip() for line in log if line.strip()]
        reason = (errors or lines or [f"exit code {returncode}"])[-1]
    error = BackendError(
        f"the ONNX Runtime GenAI model builder failed: {reason}",
        hint="run with --debug to see the builder's full output",
    )
    error.__cause__ = RuntimeError("model builder output:\n" + "".join(log[-200:]))
    return error


def _run_builder(spec: dict[str, Any], scratch: Path, layers: int, progress: Progress) -> None:
    spec_path = scratch / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TQDM_DISABLE": "1",
    }
    log: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "phi3_dml._build_worker", str(spec_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=scratch,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            match = LAYER_LINE.search(line)
            if match:
                done = int(match.group(1)) + 1
                progress(f"converting layer {done}/{layers}", done, layers)
            elif line.startswith("Saving ONNX model"):
                progress("writing the ONNX model")
        returncode = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: do not leave the builder running
            proc.kill()
            proc.wait()
    if returncode != 0 or not any(line.startswith("PHI3-BUILD-DONE") for line in log):
        raise _failure(log, returncode)


def _model_files(folder: Path, genai: Mapping[str, Any]) -> list[str]:
    filename = genai.get("model", {}).get("decoder", {}).get("filename")
    if not isinstance(filename, str) or not (folder / filename).is_file():
        raise ArtifactError(f"the model builder wrote no decoder model in {folder} (genai_config names {filename!r})")
    data = sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.name.startswith(filename) and p.name != filename
    )
    return [filename, *data]


def quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> dict[str, Any]:
    """Build the artifact; return the extra manifest fields (``context_length`` among them)."""
    installation = probe.installation()
    plan = targets.plan_build(request.precision, request.options, installation.default_execution_provider())
    builder_version = _require_builder(installation)
    source = request.source.path
    hf_config = _source_config(source)
    layers = int(hf_config.get("num_hidden_layers") or 0)
    scratch = output_dir / SCRATCH
    scratch.mkdir()
    extra = plan.extra_options()
    if request.trust_remote_code:
        extra["hf_remote"] = "true"
    spec = {
        "source": str(source),
        "output": str(output_dir),
        "precision": plan.precision,
        "execution_provider": plan.execution_provider,
        "cache_dir": str(scratch / "cache"),
        "extra_options": extra,
    }
    progress(
        f"building {plan.precision} ONNX model for {plan.execution_provider} "
        f"(onnxruntime-genai builder {builder_version})",
        0,
        layers or None,
    )
    try:
        _run_builder(spec, scratch, layers, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress(f"writing configs that onnxruntime-genai >= {compat.OLDEST_RUNTIME} reads")
    report = compat.downlevel_artifact(output_dir, source, builder_version)
    genai = json.loads((output_dir / "genai_config.json").read_text(encoding="utf-8"))
    model = genai.get("model", {})
    return {
        "context_length": model.get("context_length"),
        "execution_provider": plan.execution_provider,
        "block_size": plan.block_size,
        "accuracy_level": plan.accuracy_level,
        "builder_version": builder_version,
        "model_files": _model_files(output_dir, genai),
        "vocab_size": model.get("vocab_size"),
        **report.manifest_fields(),
    }


__all__ = ["quantize"]
