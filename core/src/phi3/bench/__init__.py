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

Everything here imports no vendor library in the calling process. The parts, one job each:
:mod:`phi3.bench.targets` (what to run), :mod:`phi3.bench.prompt` (the N-token prompt),
:mod:`phi3.bench.child` (one child process), :mod:`phi3.bench.worker` (what the child does),
:mod:`phi3.bench.runner` (rounds and the report), :mod:`phi3.bench.stats` (medians and spread),
:mod:`phi3.bench.render` (table rows and chart).
"""

from __future__ import annotations

from phi3.bench.child import CHILD_TIMEOUT_S, BenchChildError, peak_rss_bytes, run_child, worker_command
from phi3.bench.prompt import FILLER, build_prompt
from phi3.bench.render import format_stat, import_pyplot, plot_report, table_rows
from phi3.bench.runner import TargetResult, build_report, machine_info, run_benchmark
from phi3.bench.stats import HIGHER_IS_BETTER, METRICS, Stat, summarize
from phi3.bench.targets import BenchSettings, BenchTarget, Unavailable, plan_targets
from phi3.bench.worker import WARMUP_PROMPT, worker_main

__all__ = [
    "CHILD_TIMEOUT_S",
    "FILLER",
    "HIGHER_IS_BETTER",
    "METRICS",
    "WARMUP_PROMPT",
    "BenchChildError",
    "BenchSettings",
    "BenchTarget",
    "Stat",
    "TargetResult",
    "Unavailable",
    "build_prompt",
    "build_report",
    "format_stat",
    "import_pyplot",
    "machine_info",
    "peak_rss_bytes",
    "plan_targets",
    "plot_report",
    "run_benchmark",
    "run_child",
    "summarize",
    "table_rows",
    "worker_command",
    "worker_main",
]
