"""What every benchmark report shares: the run's metadata, the quiet-machine rule, raw JSON and ``--render``.

Each script in this folder writes its raw results to ``<STEM>.json`` and renders ``<STEM>.md`` from that
JSON alone, so ``python benchmarks/<script>.py --render`` re-creates the report byte for byte
(``tests/test_benchmark_reports.py`` checks every committed report). The raw JSON carries
:func:`run_metadata`: date, commit, exact command, CPU model, CPU count, Python, every phi3 distribution's
and vendor library's installed version, the versions of the vendor modules actually imported, and the
1-minute/5/15 load average at the start and the end.

One rule decides whether a run was quiet: the 1-minute load average **at the start** is at most
:data:`QUIET_LOAD` (the load at the end is reported too, but it includes the run's own load). A script
refuses to start on a busy machine unless given ``--noisy`` (:func:`refuse_if_noisy`), and the report says
which it was (:func:`machine_state`).

Standard library only: a report renders without phi3 or any vendor library installed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUIET_LOAD = 0.5
"""The highest 1-minute load average at the start of a run that counts as a quiet machine."""
UNKNOWN = "unknown"
"""What raw results recorded before a field existed carry in its place."""
DISTRIBUTIONS = (
    "phi3-core",
    "phi3-openvino",
    "phi3-dml",
    "phi3-npu",
    "phi3-llamacpp",
    "openvino",
    "openvino-genai",
    "openvino-tokenizers",
    "optimum-intel",
    "optimum",
    "nncf",
    "onnxruntime",
    "onnxruntime-genai",
    "intel-npu-acceleration-library",
    "llama-cpp-python",
    "llguidance",
    "xgrammar",
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "matplotlib",
    "ray",
    "httpx",
)
"""Installed distributions whose versions a raw result records (the ones that are installed)."""
VENDOR_MODULES = (
    "openvino",
    "openvino_genai",
    "optimum",
    "nncf",
    "onnxruntime",
    "onnxruntime_genai",
    "intel_npu_acceleration_library",
    "llama_cpp",
    "llguidance",
    "xgrammar",
    "torch",
    "transformers",
    "numpy",
    "ray",
)
"""Modules whose ``__version__`` is recorded when the run imported them in this process."""


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, rounded to 0.01 (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def is_quiet(load_at_start: list[float] | None) -> bool:
    """The rule for a quiet run: the 1-minute load average at the start (the end's includes the run's own)."""
    return load_at_start is not None and load_at_start[0] <= QUIET_LOAD


def machine_state(load: dict[str, Any]) -> str:
    """``"a quiet machine"`` or the warning a noisy run's report carries, from the raw ``load_average``."""
    if is_quiet(load.get("start")):
        return "a quiet machine"
    return "**a machine shared with other jobs while it ran** (compare rows within this run)"


def refuse_if_noisy(noisy: bool) -> list[float] | None:
    """The load at the start; exits with status 2 when it is above :data:`QUIET_LOAD` and ``noisy`` is unset."""
    load = load_average()
    if not is_quiet(load) and not noisy:
        print(
            f"Error: the 1-minute load average is {load and load[0]}, above {QUIET_LOAD}: "
            "wait for a quiet machine, or pass --noisy to run anyway (the report will say so)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return load


def git_commit() -> str | None:
    """The commit measured, with ``-dirty`` when the tree had changes (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def installed_versions() -> dict[str, str]:
    """Every installed distribution of :data:`DISTRIBUTIONS` and its version."""
    found = {}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def tree_versions(root: Path = HERE.parent) -> dict[str, str]:
    """Each phi3 distribution's version in the checked-out tree (its pyproject's, or its ``_version.py``'s):
    an editable install's metadata can be stale, and the artifact cache keys on these."""
    found = {}
    for pyproject in sorted([root / "core" / "pyproject.toml", *root.glob("plugins/*/pyproject.toml")]):
        with contextlib.suppress(OSError):
            text = pyproject.read_text(encoding="utf-8")  # no tomllib: Python 3.10 has none
            name = re.search(r'^name\s*=\s*"([^"]+)"', text, re.MULTILINE)
            version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
            for source in pyproject.parent.glob("src/*/_version.py"):
                version = version or re.search(r'__version__\s*=\s*"([^"]+)"', source.read_text(encoding="utf-8"))
            if name:
                found[name.group(1)] = version.group(1) if version else UNKNOWN
    return found


def imported_versions() -> dict[str, str]:
    """The vendor modules this process imported, with the ``__version__`` they report."""
    found = {}
    for name in VENDOR_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", UNKNOWN))
    return found


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The exact command, as run from the repository root."""
    return " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def run_metadata(script: str, argv: Sequence[str] | None, load_at_start: list[float] | None) -> dict[str, Any]:
    """What a raw result records about the run before it starts (:func:`finish` adds the end)."""
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "command": command_line(script, argv),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": {"start": load_at_start, "end": None},
        "versions": installed_versions(),
        "tree_versions": tree_versions(),
    }


def finish(meta: dict[str, Any]) -> dict[str, Any]:
    """Record the load at the end and the vendor modules the run imported (in place; returned)."""
    meta["load_average"]["end"] = load_average()
    meta["imported"] = imported_versions()
    return meta


def provenance(results: dict[str, Any], script: str) -> str:
    """One sentence: when, at which commit, with what command, on which CPU, and whether the machine was quiet."""
    load = results.get("load_average") or {}
    command = results.get("command") or f"python benchmarks/{script}"
    return (
        f"Measured {results.get('date', UNKNOWN)} at commit `{results.get('commit') or UNKNOWN}` with "
        f"`{command}` on {results.get('cpu_model') or 'CPU model unknown'} "
        f"({results.get('cpus', UNKNOWN)} CPUs), {machine_state(load)}: 1/5/15-minute load average "
        f"{load.get('start')} at the start and {load.get('end')} at the end."
    )


def versions_line(results: dict[str, Any]) -> str:
    installed = ", ".join(f"{k} {v}" for k, v in sorted((results.get("versions") or {}).items()))
    imported = ", ".join(f"{k} {v}" for k, v in sorted((results.get("imported") or {}).items()))
    tree = ", ".join(f"{k} {v}" for k, v in sorted((results.get("tree_versions") or {}).items()))
    return (
        f"Versions installed: {installed or UNKNOWN}. In the checked-out tree: {tree or UNKNOWN}. Imported in the "
        f"script's own process (not its measuring children): {imported or UNKNOWN}."
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--render`` and ``--noisy``, the same in every script."""
    parser.add_argument("--render", action="store_true", help="re-create the report from the raw JSON beside it")
    parser.add_argument("--noisy", action="store_true", help=f"run even above 1-minute load average {QUIET_LOAD}")


def raw_path(report: Path) -> Path:
    """The raw results beside a report: same stem, ``.json``."""
    return report.with_suffix(".json")


def write(report: Path, results: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """Write the raw JSON, then the report rendered from what was written (so ``--render`` gives the same)."""
    raw_path(report).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    rerender(report, render)
    print(f"wrote {raw_path(report)} and {report}", file=sys.stderr)


def rerender(report: Path, render: Callable[[dict[str, Any]], str]) -> None:
    """``--render``: the report from the raw JSON beside it."""
    results = json.loads(raw_path(report).read_text(encoding="utf-8"))
    report.write_text(render(results), encoding="utf-8")
