"""Running one measurement in a fresh child process and reading its JSON answer back."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import Phi3Error

CHILD_TIMEOUT_S = 3600.0
"""A child that takes longer than this is killed (quantizing a 3.8B model can take many minutes)."""


class BenchChildError(Phi3Error):
    """A measuring child process failed; ``message`` is its last error line."""


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
