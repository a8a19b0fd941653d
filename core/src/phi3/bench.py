"""Measuring backends side by side: the logic behind ``phi3 bench`` (and ``benchmarks/run.py``).

What is measured, per backend/engine/device ("target"), each number a median with min and max
over ``runs`` runs:

``cold_load_s``
    Wall time of :func:`phi3.load` in a **new process** whose compiled-blob folder is **empty**
    (OpenVINO's ``CACHE_DIR`` and the like): vendor import + reading the artifact + compiling.
``warm_load_s``
    The same in a new process whose compiled-blob folder was filled by an earlier process: what
    every run after the first costs. ``cold_load_s / warm_load_s`` is the compiled-blob cache's gain.
``ttft_s``
    Time to first token of a raw prompt of exactly ``prompt_tokens`` tokens (built with the
    model's own tokenizer, checked against the count the backend reports).
``decode_tokens_per_s``
    (new tokens - 1) / (time of last token - time of first token): the steady decode rate.
``e2e_tokens_per_s``
    new tokens / whole generate call (prefill included).
``first_call_s``
    The whole of a 2-token generation from a 2-token prompt, the first request in the process:
    one-time costs of a first generation (lazy imports, thread pools) show here, and are kept out
    of the TTFT and decode numbers, which come from the request after it.
``peak_rss_bytes``
    Peak resident memory of the measuring process (load + generate): ``VmHWM`` on Linux.

Method, so the numbers can be trusted:

- Artifacts are built (or found in phi3's cache) first, in a child process; quantizing is never
  part of a measured run. The time it took is reported separately.
- Every measured run is its own child process (``python -m phi3.bench SPEC OUT``), so nothing
  (imports, allocator state, compiled kernels) carries over between runs or targets. The child
  uses phi3's public API exactly as an application would; only the compiled-blob folder is
  redirected to a private one (empty for cold runs, pre-filled for warm runs), so the user's own
  compiled cache is neither used nor touched.
- One unmeasured warm-up child per target fills its warm folder (and the OS file cache).
- Runs are interleaved: round 1 runs every target once, then round 2 ..., each round starting at
  the next target, so machine drift (thermal, other load) hits every target alike.
- End-of-sequence is suppressed (``ignore_eos``), so every run decodes exactly ``new_tokens``
  tokens; a run that decodes another count is an error, not a data point.

Everything here imports no vendor library in the calling process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi3._version import __version__
from phi3.errors import BackendNotFoundError, ConfigError, Phi3Error
from phi3.plugins import PluginRegistry
from phi3.types import BackendStatus

METRICS: tuple[str, ...] = (
    "cold_load_s",
    "warm_load_s",
    "first_call_s",
    "ttft_s",
    "decode_tokens_per_s",
    "e2e_tokens_per_s",
    "peak_rss_bytes",
)
"""The summarised metrics, in display order."""

HIGHER_IS_BETTER = frozenset({"decode_tokens_per_s", "e2e_tokens_per_s"})

CHILD_TIMEOUT_S = 3600.0
"""A child that takes longer than this is killed (quantizing a 3.8B model can take many minutes)."""

WARMUP_PROMPT = "Hi"
"""The first request in every measuring process (see ``first_call_s``)."""

FILLER = (
    "Memory bandwidth often limits how fast a language model can generate new tokens on a laptop, "
    "because every weight is read once for every token. Quantization stores the weights with fewer "
    "bits, so less memory is read and decoding gets faster, at a small cost in accuracy. Neural "
    "processing units and integrated graphics share the same memory as the processor, which is why "
    "the size of the model matters as much as the speed of the chip. The quick brown fox jumps over "
    "the lazy dog while the farmer watches from the porch, and the weather today is sunny with a "
    "light breeze. Students learn mathematics, history, science, music and several languages. "
)
"""Plain text the benchmark prompt is cut from (repeated as needed)."""


class BenchChildError(Phi3Error):
    """A measuring child process failed; ``message`` is its last error line."""


# -- what to run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTarget:
    """One backend/engine/device combination to measure."""

    backend: str
    engine: str
    device: str = "auto"

    @property
    def label(self) -> str:
        device = "" if self.device == "auto" else f"@{self.device}"
        return f"{self.backend}/{self.engine}{device}"


@dataclass(frozen=True)
class Unavailable:
    """A requested target that cannot be measured here, and why."""

    backend: str
    engine: str | None
    device: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BenchSettings:
    """What every target is asked to do."""

    model: str
    precision: str | None = None
    prompt_tokens: int = 128
    new_tokens: int = 128
    runs: int = 5
    revision: str | None = None
    cold: bool = True
    """Also measure cold loads (one extra child per run and target)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("prompt_tokens", "new_tokens", "runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if self.prompt_tokens < 2 and not problems:
            problems.append("prompt-tokens must be at least 2 (the BOS token plus one token of text)")
        if self.new_tokens < 2 and not problems:
            problems.append("new-tokens must be at least 2 (decode speed needs a second token)")
        if problems:
            raise ConfigError("; ".join(problems))


def _split_list(values: Sequence[str] | str | None, what: str = "list") -> list[str]:
    """``a,b`` -> ``[a, b]``; a list that names nothing (``,,,`` or blanks) is refused, not read as "all"."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        out.extend(part.strip() for part in item.split(",") if part.strip())
    if items and not out:
        raise ConfigError(
            f"the {what} {','.join(items)!r} names nothing", hint="give names separated by commas, e.g. openvino,dml"
        )
    return list(dict.fromkeys(out))


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


def plan_targets(
    registry: PluginRegistry,
    backends: Sequence[str] | str | None = None,
    engines: Sequence[str] | str | None = None,
    devices: Sequence[str] | str | None = None,
) -> tuple[list[BenchTarget], list[Unavailable]]:
    """Expand the user's lists into targets; everything that cannot run is returned with why.

    ``backends``: names (default: every installed backend). ``engines``: engine names, either bare
    (applied to every backend that has an engine of that name) or ``backend:engine``; ``all``
    means every engine; default: each backend's default engine. ``devices``: device names tried on
    every backend (default ``auto``). Nothing requested is dropped silently.
    """
    names = _split_list(backends, "backend list") or registry.names()
    engine_names = _split_list(engines, "engine list")
    device_names = _split_list(devices, "device list") or ["auto"]
    targets: list[BenchTarget] = []
    missing: list[Unavailable] = []
    matched: set[str] = set()
    for name in names:
        try:
            entry = registry.entry(name)
        except BackendNotFoundError as exc:
            why = exc.message if name in registry.disabled else f"not installed ({exc.hint or exc.message})"
            missing.append(Unavailable(name, None, None, why))
            continue
        info = entry.info
        explicit_device = any(d.lower() != "auto" for d in device_names)
        if info is None or entry.status in (BackendStatus.BROKEN, BackendStatus.MISSING_DEPENDENCY):
            missing.append(Unavailable(name, None, None, f"{entry.status.value}: {entry.detail}"))
            continue
        if entry.status is BackendStatus.NO_DEVICE and not explicit_device:
            missing.append(
                Unavailable(
                    name,
                    None,
                    None,
                    f"no device: {entry.detail}".rstrip(": ") + " (pass --device to use an override device)",
                )
            )
            continue
        wanted: list[str] = []
        if not engine_names:
            default = info.default_engine
            if default is None:
                reasons = "; ".join(f"{e.name}: {e.detail}" for e in info.engines) or "it lists no engine"
                missing.append(Unavailable(name, None, None, f"no usable engine ({reasons})"))
                continue
            wanted = [default]
        else:
            for spec in engine_names:
                owner, sep, engine = spec.rpartition(":") if ":" in spec else spec.rpartition("/")
                if sep and owner != name:
                    continue
                if engine == "all":
                    wanted.extend(e.name for e in info.engines)
                    matched.add(spec)
                elif sep or info.engine(engine) is not None:
                    wanted.append(engine)
                    matched.add(spec)
            if not wanted:
                have = ", ".join(e.name for e in info.engines)
                missing.append(
                    Unavailable(name, None, None, f"has none of the engines {', '.join(engine_names)} (it has: {have})")
                )
                continue
        for engine in dict.fromkeys(wanted):
            engine_info = info.engine(engine)
            if engine_info is None:
                have = ", ".join(e.name for e in info.engines)
                missing.append(Unavailable(name, engine, None, f"no engine {engine!r} (it has: {have})"))
                continue
            if not engine_info.available:
                missing.append(Unavailable(name, engine, None, f"engine unusable: {engine_info.detail}"))
                continue
            targets.extend(BenchTarget(name, engine, device) for device in device_names)
    for spec in engine_names:
        if spec not in matched and not any(m.engine is None and "has none of the engines" in m.reason for m in missing):
            missing.append(Unavailable("-", spec, None, "no requested backend has an engine of this name"))
    return targets, missing


# -- the prompt -------------------------------------------------------------------------------


def _tokenizer_functions(folder: Path) -> tuple[Callable[[str, bool], list[int]], Callable[[Sequence[int]], str]]:
    """encode(text, add_special_tokens) and decode(ids) of the checkpoint's own tokenizer."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            pass
        else:
            tok: Any = Tokenizer.from_file(str(tokenizer_json))

            def encode_fast(text: str, special: bool) -> list[int]:
                return [int(i) for i in tok.encode(text, add_special_tokens=special).ids]

            def decode_fast(ids: Sequence[int]) -> str:
                return str(tok.decode(list(ids), skip_special_tokens=True))

            return encode_fast, decode_fast
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(
            f"building an exact-length prompt needs the model's tokenizer, but neither the tokenizers nor the "
            f"transformers package can read {folder}",
            hint="pip install tokenizers",
        ) from None
    hf: Any = AutoTokenizer.from_pretrained(str(folder))

    def encode_hf(text: str, special: bool) -> list[int]:
        return [int(i) for i in hf(text, add_special_tokens=special)["input_ids"]]

    def decode_hf(ids: Sequence[int]) -> str:
        return str(hf.decode(list(ids), skip_special_tokens=True))

    return encode_hf, decode_hf


def build_prompt(tokenizer_dir: str | os.PathLike[str], n_tokens: int) -> str:
    """A raw prompt of plain English that the model's tokenizer encodes to exactly ``n_tokens`` ids.

    The count includes the special tokens the tokenizer adds (Phi-3's ``<s>``), as backends count
    it. Cutting text at a token boundary can re-tokenize differently, so the cut is adjusted until
    the round trip gives exactly ``n_tokens``.
    """
    encode, decode = _tokenizer_functions(Path(tokenizer_dir))
    added = len(encode("a", True)) - len(encode("a", False))
    body = n_tokens - added
    if body < 1:
        raise ConfigError(f"prompt-tokens must be more than the {added} special token(s) the tokenizer adds")
    text = FILLER
    while len(encode(text, False)) < body + 16:
        text += FILLER
    ids = encode(text, False)
    for take in [body + d for d in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5)]:
        if take < 1:
            continue
        candidate = decode(ids[:take]).strip()
        if len(encode(candidate, True)) == n_tokens:
            return candidate
    raise ConfigError(f"could not build a prompt of exactly {n_tokens} tokens with this tokenizer")


# -- running children -------------------------------------------------------------------------


def _error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("Error:", "phi3.errors.", "RuntimeError", "ValueError")) or "Error:" in line:
            return line
    return lines[-1] if lines else "no output"


def run_child(
    command: Sequence[str],
    spec: Mapping[str, Any],
    *,
    timeout: float = CHILD_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run ``command SPEC.json OUT.json`` and return the JSON object the child wrote to OUT.json.

    The protocol every benchmark worker follows (phi3's own and ``benchmarks/``' direct-call
    workers): read the spec, do the work, write one JSON object, exit 0. Anything else raises
    :class:`BenchChildError` with the child's last error line. ``wall_s`` (the child's whole life,
    interpreter start included) is added to the result.
    """
    with tempfile.TemporaryDirectory(prefix="phi3-bench-") as scratch:
        spec_path, out_path = Path(scratch) / "spec.json", Path(scratch) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        started = time.perf_counter()
        try:
            done = subprocess.run(
                [*command, str(spec_path), str(out_path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd is not None else scratch,
            )
        except subprocess.TimeoutExpired:
            raise BenchChildError(f"timed out after {timeout:.0f} s") from None
        wall = time.perf_counter() - started
        if done.returncode != 0 or not out_path.is_file():
            raise BenchChildError(_error_line(done.stderr) + f" (exit code {done.returncode})")
        result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    result["wall_s"] = wall
    return result


def worker_command(python: str | None = None) -> list[str]:
    """The command of phi3's own measuring child (this module's ``__main__``)."""
    return [python or sys.executable, "-m", "phi3.bench"]


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process image, in bytes (None if unknown).

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives
    ``exec``, so a child started by a big parent would report the parent's size.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:
            return None
        return int(psutil.Process().memory_info().peak_wset)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB elsewhere
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Median and range of one metric over the runs."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        clean = [float(v) for v in values if v is not None]
        if not clean:
            return None
        return cls(statistics.median(clean), min(clean), max(clean), len(clean))

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def summarize(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, dict[str, Any]]:
    """``{metric: {"median", "min", "max", "n"}}`` over the runs that have the metric."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        stat = Stat.of([r[metric] for r in runs if r.get(metric) is not None])
        if stat is not None:
            out[metric] = stat.as_dict()
    return out


# -- the benchmark ----------------------------------------------------------------------------


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


# -- rendering --------------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("cold_load_s", "COLD LOAD s", lambda v: f"{v:.2f}"),
    ("warm_load_s", "WARM LOAD s", lambda v: f"{v:.2f}"),
    ("first_call_s", "1ST CALL ms", lambda v: f"{v * 1000:.0f}"),
    ("ttft_s", "TTFT ms", lambda v: f"{v * 1000:.0f}"),
    ("decode_tokens_per_s", "DECODE tok/s", lambda v: f"{v:.1f}"),
    ("e2e_tokens_per_s", "E2E tok/s", lambda v: f"{v:.1f}"),
    ("peak_rss_bytes", "PEAK RSS MB", lambda v: f"{v / 1e6:.0f}"),
)


def format_stat(stat: Mapping[str, Any] | None, fmt: Callable[[float], str]) -> str:
    """``median (min-max)``, or ``-``."""
    if not stat:
        return "-"
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return fmt(stat["median"])
    return f"{fmt(stat['median'])} ({fmt(stat['min'])}-{fmt(stat['max'])})"


def table_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the results table (one row per measured target)."""
    headers = ["BACKEND/ENGINE", "DEVICE", "PRECISION", *(title for _, title, _ in COLUMNS)]
    rows = []
    for item in report["results"]:
        summary = item["summary"]
        rows.append(
            [
                f"{item['backend']}/{item['engine']}",
                str(item["device"]),
                str(item["precision"]),
                *(format_stat(summary.get(key), fmt) for key, _, fmt in COLUMNS),
            ]
        )
    return headers, rows


def plot_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a bar chart (TTFT, decode rate, cold/warm load; whiskers = min-max) to ``path``."""
    plt = import_pyplot()
    items = report["results"]
    if not items:
        raise ConfigError("nothing was measured, so there is nothing to plot")
    labels = [f"{i['backend']}/{i['engine']}\n{i['device']} {i['precision']}" for i in items]
    panels: list[tuple[str, list[tuple[str, float, str | None]]]] = [
        ("Time to first token (ms)", [("ttft_s", 1000.0, None)]),
        ("Decode (tokens/s, higher is better)", [("decode_tokens_per_s", 1.0, None)]),
        ("Load (s)", [("cold_load_s", 1.0, "cold"), ("warm_load_s", 1.0, "warm")]),
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 2.5, 0.55 * len(items) + 2.2), sharey=True, squeeze=False
    )
    positions = list(range(len(items)))
    for ax, (title, series) in zip(axes[0], panels):
        width = 0.8 / len(series)
        for k, (metric, scale, name) in enumerate(series):
            where, medians, low, high = [], [], [], []
            for position, item in zip(positions, items):
                stat = item["summary"].get(metric)
                if not stat:  # not measured (e.g. --no-cold): no bar, rather than a bar at 0
                    continue
                m = stat["median"] * scale
                where.append(position + (k - (len(series) - 1) / 2) * width)
                medians.append(m)
                low.append(m - stat["min"] * scale)
                high.append(stat["max"] * scale - m)
            if not where:
                continue
            bars = ax.barh(where, medians, height=width, xerr=[low, high], capsize=3, label=name)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 100 else f"{v:.3g}" for v in medians], padding=4, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[0][0].set_yticks(positions)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    axes[0][0].invert_yaxis()
    s = report["settings"]
    fig.suptitle(
        f"phi3 bench {Path(str(s['model'])).name}: {s['prompt_tokens']}-token prompt, "
        f"{s['new_tokens']} new tokens, median of {s['runs']} (whiskers: min-max)",
        fontsize=11,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def import_pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or a ConfigError naming the extra."""
    import importlib

    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ConfigError("--plot needs matplotlib", hint='pip install "phi3-core[bench]"') from None
    return plt


# -- the measuring child ----------------------------------------------------------------------


@contextlib.contextmanager
def _compiled_dir_redirected(folder: str | None) -> Iterator[None]:
    """Make :func:`phi3.load` hand backends ``folder/<backend>`` as their compiled-blob cache.

    Only ever done inside a measuring child process, so the user's own compiled cache is neither
    read nor written by a benchmark.
    """
    if folder is None:
        yield
        return
    from phi3.cache import ArtifactCache

    root = Path(folder)

    def compiled_dir(self: ArtifactCache, backend: str) -> Path:
        path = root / backend
        path.mkdir(parents=True, exist_ok=True)
        return path

    original = ArtifactCache.compiled_dir
    ArtifactCache.compiled_dir = compiled_dir  # type: ignore[method-assign]
    try:
        yield
    finally:
        ArtifactCache.compiled_dir = original  # type: ignore[method-assign]


def _prepare(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Build or find the artifact; build the prompt from the checkpoint's tokenizer."""
    import phi3
    from phi3.cache import ArtifactCache, is_artifact, read_artifact
    from phi3.plugins import get_registry
    from phi3.sources import resolve_model

    model_path = Path(str(spec["model"])).expanduser()
    started = time.perf_counter()
    if model_path.is_dir() and is_artifact(model_path):
        artifact = read_artifact(model_path.resolve(), from_cache=True)
        tokenizer_dir = artifact.path
    else:
        artifact = phi3.quantize(
            spec["model"],
            backend=spec["backend"],
            precision=spec["precision"],
            engine=spec["engine"],
            revision=spec["revision"],
        )
        tokenizer_dir = resolve_model(spec["model"], ArtifactCache().root, spec["revision"]).path
        if not (tokenizer_dir / "tokenizer.json").is_file() and (artifact.path / "tokenizer.json").is_file():
            tokenizer_dir = artifact.path
    quantize_s = time.perf_counter() - started
    info = get_registry().entry(spec["backend"]).info
    size = sum(p.stat().st_size for p in artifact.path.rglob("*") if p.is_file())
    return {
        "artifact": {
            "path": str(artifact.path),
            "key": artifact.key,
            "format": artifact.artifact_format,
            "size_bytes": size,
            "built_now": not artifact.from_cache,
            "quantize_s": None if artifact.from_cache else quantize_s,
        },
        "precision": artifact.precision,
        "library_versions": dict(info.library_versions) if info else {},
        "prompt": build_prompt(tokenizer_dir, int(spec["prompt_tokens"])),
    }


def _measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Load in this fresh process (timed) and, for warm runs, generate (timed by phi3)."""
    import phi3

    with _compiled_dir_redirected(spec.get("compiled_dir")):
        started = time.perf_counter()
        model = phi3.load(
            spec["model"],
            backend=spec["backend"],
            device=spec["device"],
            precision=spec["precision"],
            engine=spec["engine"],
            revision=spec["revision"],
        )
        load_s = time.perf_counter() - started
    out: dict[str, Any] = {"load_s": load_s, "device": model.device, "precision": model.precision}
    try:
        if spec["mode"] == "warm":
            # A first, tiny request pays the one-time costs of a process's first generation (lazy
            # imports, thread pools, allocations); it gets its own number. Its prompt shares no
            # prefix with the measured one, so no engine can reuse its KV cache.
            first = model.generate(WARMUP_PROMPT, max_new_tokens=2, ignore_eos=True)
            out["first_call_s"] = first.total_s
            stream = model.stream(spec["prompt"], max_new_tokens=int(spec["new_tokens"]), ignore_eos=True)
            for _ in stream:
                pass
            result = stream.result
            out.update(
                ttft_s=result.time_to_first_token_s,
                decode_tokens_per_s=result.decode_tokens_per_s,
                e2e_tokens_per_s=result.new_tokens / result.total_s if result.total_s > 0 else 0.0,
                total_s=result.total_s,
                new_tokens=result.new_tokens,
                prompt_tokens=result.prompt_tokens,
                token_ids=list(result.token_ids),
                finish_reason=result.finish_reason,
                context_length=model.session.context_length,
            )
    finally:
        model.close()
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m phi3.bench SPEC.json OUT.json``: one measurement, in this (fresh) process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m phi3.bench SPEC.json OUT.json (used by phi3 bench)", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    try:
        out = _prepare(spec) if spec["mode"] == "prepare" else _measure(spec)
    except Phi3Error as exc:
        print(f"Error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    Path(args[1]).write_text(json.dumps(out), encoding="utf-8")
    return 0


__all__ = [
    "METRICS",
    "BenchChildError",
    "BenchSettings",
    "BenchTarget",
    "Stat",
    "TargetResult",
    "Unavailable",
    "build_prompt",
    "build_report",
    "machine_info",
    "peak_rss_bytes",
    "plan_targets",
    "plot_report",
    "run_benchmark",
    "run_child",
    "summarize",
    "table_rows",
    "worker_command",
]


if __name__ == "__main__":
    sys.exit(worker_main())
