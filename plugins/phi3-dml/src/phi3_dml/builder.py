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
from phi3.errors import (
    ArtifactError,
    BackendError,
    BackendUnavailableError,
    ModelNotFoundError,
    PrecisionNotSupportedError,
)
from phi3.types import Progress, QuantizeRequest

from phi3_dml import compat, lora, probe, targets

SCRATCH = ".builder-scratch"
LAYER_LINE = re.compile(r"Reading (?:decoder )?layer (\d+)")
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception)\b.*")


def _source_config(source: Path) -> dict[str, Any]:
    try:
        data = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{source}/config.json is unreadable: {exc}") from None
    return data if isinstance(data, dict) else {}


def window_layout(hf_config: Mapping[str, Any]) -> int | None:
    """The sliding window that really binds (shorter than the context), or None.

    Phi-3-mini-4k and -medium-4k attend to the last ``sliding_window`` positions (2047 of 4096); the
    128k models carry a window longer than their context, which never binds.
    """
    window = hf_config.get("sliding_window")
    longest = hf_config.get("max_position_embeddings")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        return None
    if isinstance(longest, int) and window >= longest:
        return None
    return window


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` without copying where possible: a symlink (Windows allows those only in
    developer mode or as administrator), else a hard link (same volume), else a copy."""
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
        return
    except OSError:
        pass
    if target.is_dir():
        shutil.copytree(target, link)
        return
    try:
        os.link(target, link)
    except OSError:
        shutil.copy2(target, link)


def _staged_source(source: Path, hf_config: Mapping[str, Any], scratch: Path) -> Path:
    """The checkpoint as the builder must see it to build the sliding window into the graph.

    Workaround for onnxruntime-genai's model builder 0.18.0: it marks a layer "local" (sliding-window
    attention) only from ``config.layer_types``, which ``Phi3Config`` does not have, so it builds every
    Phi-3 layer with full attention yet still writes a ``sliding_window`` section into genai_config.json.
    The runtime then sizes the KV cache at window + slack and fails once a sequence passes the window
    (``total_sequence_length must equal past_sequence_length + kv_sequence_length``; at ~2k tokens on
    Phi-3-mini-4k). A staged copy (weights symlinked) whose config.json says every layer is
    ``sliding_attention`` (what transformers' Phi-3 computes) gets a graph with ``local_window_size``;
    ``windowed_kv_cache=false`` (see :func:`quantize`) keeps a full-length KV cache, so genai_config.json
    has no sliding_window section and 0.13.1 runtimes read it. Tracked by
    ``test_builder_still_ignores_the_phi3_window`` (strict xfail).
    """
    if window_layout(hf_config) is None or hf_config.get("layer_types") is not None:
        return source
    staged = scratch / "source"
    staged.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            _link(item.resolve(), staged / item.name)
    layers = int(hf_config.get("num_hidden_layers") or 0)
    config = {**hf_config, "layer_types": ["sliding_attention"] * layers}
    (staged / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return staged


def check_fp16_cpu_layout(precision: str, execution_provider: str, hf_config: Mapping[str, Any]) -> None:
    """Refuse an fp16 graph for the CPU provider where builder 0.18.0's graph is wrong.

    Workaround for onnxruntime-genai's model builder 0.18.0: for fp16 on ``cpu`` it does not use
    GroupQueryAttention (not "supported" there) but MultiHeadAttention with a plain causal mask and,
    for GQA layouts, K/V repeated with Tile. The graph then (a) crashes at the first decode step on
    every GQA model (Phi-3-medium, Phi-4-mini: the repeated K/V no longer matches the cache shape)
    and (b) silently ignores the sliding window (Phi-3-mini-4k past 2047 tokens). The fp16 graph built
    for ``dml`` uses GroupQueryAttention and is exact under the CPU provider too, hence the hint.
    Tracked by ``test_builder_fp16_cpu_graph_still_breaks`` (strict xfail).
    """
    if precision != "fp16" or execution_provider != "cpu":
        return
    heads = hf_config.get("num_attention_heads")
    kv_heads = hf_config.get("num_key_value_heads") or heads
    why = []
    if heads != kv_heads:
        why.append(f"grouped-query attention ({heads} heads, {kv_heads} KV heads): it crashes at the first decode step")
    window = window_layout(hf_config)
    if window is not None:
        why.append(f"a {window}-token sliding window: the graph ignores it")
    if why:
        raise PrecisionNotSupportedError(
            "the ONNX Runtime GenAI model builder writes a broken fp16 graph for execution_provider=cpu "
            f"on this model's {' and '.join(why)}",
            hint="use -O execution_provider=dml (its fp16 graph runs on the CPU provider too), or precision fp32",
        )


def check_fused_rotary(precision: str, execution_provider: str, hf_config: Mapping[str, Any]) -> None:
    """Refuse a cpu graph whose fused rotary embedding onnxruntime's CPU kernel rejects at run time.

    For ``cpu`` (except fp16, see :func:`check_fp16_cpu_layout`) the builder fuses RoPE into
    GroupQueryAttention, whose CPU kernel (onnxruntime 1.31.1) requires the cos/sin cache width,
    ``rotary_dim / 2``, to be a multiple of 8 ("cos_cache dimension 1 must be <= head_size / 2 and a
    multiple of 8") and fails at the first generate otherwise. Every catalogue model passes (Phi-4-mini:
    0.75 x 128 / 2 = 48), but a partially rotary checkpoint with other dims would build and then crash.
    The dml graph keeps RoPE as a separate op and runs on the CPU provider too, hence the hint.
    Tracked by ``test_ort_fused_rotary_still_needs_a_multiple_of_8`` (strict xfail).
    """
    if execution_provider != "cpu" or precision == "fp16":
        return
    heads = hf_config.get("num_attention_heads")
    hidden = hf_config.get("hidden_size")
    head_dim = hf_config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    rope = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
    partial = hf_config.get("partial_rotary_factor") or (rope.get("partial_rotary_factor") if rope else None) or 1.0
    if not isinstance(head_dim, int) or not isinstance(partial, (int, float)):
        return
    half = int(head_dim * partial) // 2
    if half % 8:
        raise PrecisionNotSupportedError(
            f"this model rotates {2 * half} of {head_dim} head dims; the cpu graph's fused rotary embedding "
            f"needs that width / 2 ({half}) to be a multiple of 8 (onnxruntime's CPU GroupQueryAttention "
            "rejects it at the first generate)",
            hint="use -O execution_provider=dml with precision fp16 or int4 (it runs on the CPU provider too)",
        )


def longrope_switch(hf_config: Mapping[str, Any]) -> int | None:
    """``original_max_position_embeddings`` of a LongRoPE model (where its RoPE tables switch), else None."""
    rope = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
    if not isinstance(rope, Mapping) or rope.get("rope_type", rope.get("type")) != "longrope":
        return None
    original = rope.get("original_max_position_embeddings") or hf_config.get("original_max_position_embeddings")
    longest = hf_config.get("max_position_embeddings")
    if not isinstance(original, int) or (isinstance(longest, int) and original >= longest):
        return None
    return original


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
    check_fp16_cpu_layout(plan.precision, plan.execution_provider, hf_config)
    check_fused_rotary(plan.precision, plan.execution_provider, hf_config)
    layers = int(hf_config.get("num_hidden_layers") or 0)
    scratch = output_dir / SCRATCH
    scratch.mkdir()
    extra = plan.extra_options()
    # A full-length KV cache and no genai_config sliding_window section (see _staged_source): the
    # window lives in the graph (GroupQueryAttention's local_window_size) or nowhere.
    extra["windowed_kv_cache"] = "false"
    if request.trust_remote_code:
        extra["hf_remote"] = "true"
    spec = {
        "source": str(_staged_source(source, hf_config, scratch)),
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
    progress("writing the graph with LoRA adapter inputs")
    adapter_ready = lora.add_lora_graph(output_dir, hf_config)
    genai = json.loads((output_dir / "genai_config.json").read_text(encoding="utf-8"))
    model = genai.get("model", {})
    return {
        "context_length": model.get("context_length"),
        "execution_provider": plan.execution_provider,
        "block_size": plan.block_size,
        "accuracy_level": plan.accuracy_level,
        "lm_head": plan.lm_head or "int4",
        "builder_version": builder_version,
        "model_files": _model_files(output_dir, genai),
        "vocab_size": model.get("vocab_size"),
        "longrope_switch": longrope_switch(hf_config),
        **report.manifest_fields(),
        **adapter_ready,
    }


__all__ = ["quantize"]
