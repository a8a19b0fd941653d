"""Builds under faults (issue 20, item 3): Ctrl-C, a disk that fills up, a corrupt or unreadable artifact.

Through the real CLI in subprocesses, on the reference backend (``pause_after_write`` holds a build
open so a signal or a filler file lands mid-build). The full-disk tests mount a small tmpfs (root and
a kernel that allows it: skipped otherwise) and always unmount it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sandbox import Sandbox, one_line_error

from phi3.cache import MANIFEST_NAME
from phi3.testing.disks import small_disk

pytestmark = pytest.mark.usefixtures("reference_installed")

_QUANTIZE = [sys.executable, "-m", "phi3", "quantize", "-b", "reference", "-p", "bf16"]


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


def fill(folder: Path) -> None:
    """Write a file until the file system holding ``folder`` is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def start_build(sandbox: Sandbox, model: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*_QUANTIZE, str(model), *args],
        env=sandbox.env(**env),
        cwd=sandbox.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """Read stderr until a line holding ``marker`` (the build reached that stage)."""
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"the build never printed {marker!r}: {''.join(lines)}")


def finish(proc: subprocess.Popen[str], seen: list[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + err)


@pytest.mark.parametrize("where", ["cache", "output"])
def test_ctrl_c_during_a_build_exits_130_and_leaves_no_artifact(sandbox: Sandbox, tiny_phi3: Path, where: str) -> None:
    args = ["-O", "pause_after_write=60", *(["-o", "out"] if where == "output" else [])]
    proc = start_build(sandbox, tiny_phi3, *args)
    seen = wait_for_line(proc, "writing weights")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    done = finish(proc, seen)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith("Interrupted."), done.stderr
    # nothing half-built is ever used: no artifact, no -o folder, and the temp build folder is gone
    assert not (sandbox.cwd / "out").exists()
    assert not [p for p in (sandbox.home / "artifacts").rglob(MANIFEST_NAME)]
    leftovers = [p for p in (sandbox.home / "tmp").iterdir() if p.name != "outputs"]
    leftovers += [p for p in sandbox.cwd.iterdir() if p.name.startswith(".out.")]
    assert not leftovers, leftovers
    after = sandbox.phi3("quantize", "-b", "reference", "-p", "bf16", str(tiny_phi3), *args[2:])
    assert after.returncode == 0, after.stderr  # and the next build of the same thing works
    sandbox.assert_victims_intact()


def test_a_disk_too_small_is_refused_before_building(sandbox: Sandbox, tiny_phi3: Path) -> None:
    with small_disk(sandbox.root / "disk", "200k") as disk:
        done = sandbox.phi3("quantize", "-b", "reference", "-p", "bf16", str(tiny_phi3), "-o", str(disk / "out"))
        error = one_line_error(done)
        assert error.startswith(f"Error: no space left on {disk} ({disk}), needs ~"), error
        assert "MB free" in error and "free space on that disk" in error
        assert "quantizing" not in done.stderr  # refused before any work
        assert sorted(p.name for p in disk.iterdir()) == []


@pytest.mark.parametrize("where", ["cache", "output"])
def test_a_disk_that_fills_during_a_build_is_named_with_the_space_needed(
    sandbox: Sandbox, tiny_phi3: Path, where: str
) -> None:
    with small_disk(sandbox.root / "disk", "5m") as disk:
        if where == "cache":
            home, args = disk / "home", ["-O", "pause_after_write=2"]
        else:
            home, args = sandbox.home, ["-O", "pause_after_write=2", "-o", str(disk / "out")]
        proc = start_build(sandbox, tiny_phi3, *args, PHI3_HOME=str(home))
        seen = wait_for_line(proc, "quantizing")
        fill(disk)  # the disk fills while the backend writes
        done = finish(proc, seen)
        error = one_line_error(done)
        assert error.startswith(f"Error: no space left on {disk} ("), error
        assert "needs ~" in error and "MB free" in error, error
        assert not (disk / "out").exists()
        assert not [p for p in disk.rglob(MANIFEST_NAME)]
        temp = [p for p in disk.rglob("*") if p.is_dir() and (".phi3-tmp." in p.name or p.parent.name == "tmp")]
        assert not temp, temp


def test_what_counts_as_a_full_disk(tmp_path: Path) -> None:
    import errno

    from phi3.fs_errors import is_disk_full

    plenty = tmp_path  # the test machine's /tmp is not nearly full
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    wrapped = RuntimeError("export failed")
    wrapped.__cause__ = enospc
    assert is_disk_full(enospc, plenty) and is_disk_full(wrapped, plenty)
    assert is_disk_full(RuntimeError("SafetensorError: I/O error: No space left on device (os error 28)"), plenty)
    # a C++ stream failure only counts when the disk is (nearly) full, and a permission never does
    assert not is_disk_full(RuntimeError("basic_ios::clear: iostream error"), plenty)
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"), plenty)


def test_the_space_estimate_follows_the_precision(tiny_phi3: Path) -> None:
    from phi3.cache import ArtifactSpec, estimate_build_bytes
    from phi3.types import ModelSource

    def need(precision: str) -> int:
        spec = ArtifactSpec("b", ModelSource(tiny_phi3, "tiny", "rev"), precision, "f", {}, {})
        size = estimate_build_bytes(spec)
        assert size is not None
        return size

    weights = (tiny_phi3 / "model.safetensors").stat().st_size  # fp32
    assert weights < need("fp32") < 1.3 * weights
    assert need("fp16") < need("fp32")
    assert weights < need("int4") < need("int8")  # a scratch copy at the checkpoint's precision, then compressed
