"""The benchmark itself: prepare artifacts, warm up, then interleaved measured rounds (see :mod:`phi3.bench`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi3._version import __version__
from phi3.bench.child import BenchChildError, run_child, worker_command
from phi3.bench.stats import summarize
from phi3.bench.targets import BenchSettings, BenchTarget, Unavailable

# -- the benchmark ----------------------------------------------------------------------------


def _short_run_reason(run: Mapping[str, Any], measured: Mapping[str, Any], wanted: int) -> str:
    """Why a run decoded fewer tokens than asked: a full context window, or a backend ignoring ignore_eos."""
    context = measured.get("context_length")
    prompt_tokens = run.get("prompt_tokens") or 0
    if context and prompt_tokens + wanted > context:
        return (
            f"decoded {run['new_tokens']} tokens instead of {wanted}: the {prompt_tokens}-token prompt plus "
            f"{wanted} new tokens do not fit the model's {context}-token context; lower --new-tokens or --prompt-tokens"
        )
    return f"decoded {run['new_tokens']} tokens instead of {wanted}: the backend does not honour ignore_eos"


@dataclass
class TargetResult:
    """Everything measured for one target."""

    target: BenchTarget
    artifact: dict[str, Any] = field(default_factory=dict)
    device_used: str | None = None
    precision: str | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.target.backend,
            "engine": self.target.engine,
            "device": self.device_used or self.target.device,
            "device_requested": self.target.device,
            "precision": self.precision,
            "library_versions": self.library_versions,
            "artifact": self.artifact,
            "runs": self.runs,
            "summary": summarize(self.runs),
        }


BenchProgress = Callable[[str, int, int], None]
"""``progress(message, completed, total)`` while the benchmark runs."""


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or None,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
                break
    return info


def _spec(settings: BenchSettings, target: BenchTarget, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": settings.model,
        "revision": settings.revision,
        "backend": target.backend,
        "engine": target.engine,
        "device": target.device,
        "precision": settings.precision,
        "new_tokens": settings.new_tokens,
        "prompt_tokens": settings.prompt_tokens,
        **extra,
    }


def run_benchmark(
    settings: BenchSettings,
    targets: Sequence[BenchTarget],
    *,
    progress: BenchProgress | None = None,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> tuple[list[TargetResult], str | None]:
    """Prepare every target's artifact, then measure all targets in interleaved rounds.

    Returns one :class:`TargetResult` per target (``error`` set if it failed; a failure never stops
    the others) and the prompt used. ``python``/``env`` choose the interpreter and environment of
    the children (default: this one).
    """
    report = progress or (lambda message, completed, total: None)
    command = worker_command(python)
    results = [TargetResult(t) for t in targets]
    per_round = 2 if settings.cold else 1
    total = len(targets) * (2 + per_round * settings.runs)
    done = 0
    prompt: str | None = None
    scratch_root = Path(tempfile.mkdtemp(prefix="phi3-bench-", dir=workdir))
    try:
        warm_dirs = {id(r): scratch_root / f"warm-{i}" for i, r in enumerate(results)}
        # 1. artifacts (built or found in phi3's cache), the prompt, and what each target really is
        for result in results:
            report(f"preparing {result.target.label}", done, total)
            try:
                prepared = run_child(command, _spec(settings, result.target, "prepare"), env=env)
            except BenchChildError as exc:
                result.error = f"preparing failed: {exc.message}"
            else:
                result.artifact = prepared["artifact"]
                result.precision = prepared["precision"]
                result.library_versions = prepared.get("library_versions", {})
                prompt = prompt or prepared["prompt"]
            done += 1
        # 2. one unmeasured warm-up per target: fills its private compiled-blob folder
        for result in results:
            report(f"warming up {result.target.label}", done, total)
            if result.error is None and prompt is not None:
                warm = warm_dirs[id(result)]
                warm.mkdir()
                try:
                    run_child(
                        command,
                        _spec(settings, result.target, "warm", prompt=prompt, compiled_dir=str(warm), new_tokens=2),
                        env=env,
                    )
                except BenchChildError as exc:
                    result.error = f"warm-up failed: {exc.message}"
            done += 1
        # 3. measured rounds, interleaved, each round starting one target later
        for round_index in range(settings.runs):
            order = results[round_index % len(results) :] + results[: round_index % len(results)]
            for result in order:
                label = f"run {round_index + 1}/{settings.runs}: {result.target.label}"
                if result.error is not None or prompt is None:
                    done += per_round
                    report(label, done, total)
                    continue
                run: dict[str, Any] = {"round": round_index + 1}
                try:
                    if settings.cold:
                        report(f"{label} (cold load)", done, total)
                        cold_dir = scratch_root / f"cold-{round_index}-{results.index(result)}"
                        cold_dir.mkdir()
                        try:
                            cold = run_child(
                                command,
                                _spec(settings, result.target, "cold", prompt=prompt, compiled_dir=str(cold_dir)),
                                env=env,
                            )
                        finally:
                            shutil.rmtree(cold_dir, ignore_errors=True)
                        run["cold_load_s"] = cold["load_s"]
                        run["cold_peak_rss_bytes"] = cold.get("peak_rss_bytes")
                        done += 1
                    report(f"{label} (warm load + generate)", done, total)
                    warm_run = run_child(
                        command,
                        _spec(settings, result.target, "warm", prompt=prompt, compiled_dir=str(warm_dirs[id(result)])),
                        env=env,
                    )
                    done += 1
                except BenchChildError as exc:
                    result.error = f"round {round_index + 1} failed: {exc.message}"
                    done = min(total, done + per_round)
                    continue
                run["warm_load_s"] = warm_run["load_s"]
                for key in (
                    "first_call_s",
                    "ttft_s",
                    "decode_tokens_per_s",
                    "e2e_tokens_per_s",
                    "total_s",
                    "new_tokens",
                    "prompt_tokens",
                    "peak_rss_bytes",
                ):
                    run[key] = warm_run.get(key)
                result.device_used = warm_run.get("device") or result.device_used
                if run["new_tokens"] != settings.new_tokens:
                    result.error = _short_run_reason(run, warm_run, settings.new_tokens)
                    continue
                result.runs.append(run)
        report("done", total, total)
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
    return results, prompt


def build_report(
    settings: BenchSettings,
    results: Sequence[TargetResult],
    unavailable: Sequence[Unavailable],
    prompt: str | None,
) -> dict[str, Any]:
    """The JSON document ``phi3 bench --json`` prints."""
    failed = [
        Unavailable(r.target.backend, r.target.engine, r.target.device, r.error) for r in results if r.error is not None
    ]
    return {
        "phi3_version": __version__,
        "settings": {**dataclasses.asdict(settings), "ignore_eos": True},
        "prompt": prompt,
        "machine": machine_info(),
        "results": [r.as_dict() for r in results if r.error is None and r.runs],
        "unavailable": [u.as_dict() for u in [*unavailable, *failed]],
    }
