"""Data loss, class 2: `quantize -o DIR` never removes or replaces a folder phi3 did not write.

An existing DIR is refused unless it is a phi3 artifact and ``--overwrite`` is given; the temp
sibling of a killed build is removed by the next build of that DIR or by ``phi3 cache prune``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sandbox import Sandbox, one_line_error

import phi3
from phi3.cache import MANIFEST_NAME

pytestmark = pytest.mark.usefixtures("reference_installed")


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


_QUANTIZE = [sys.executable, "-m", "phi3", "quantize", "-b", "reference", "-p", "bf16"]


def _quantize(sandbox: Sandbox, model: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return sandbox.phi3("quantize", str(model), "-b", "reference", "-p", "bf16", *args, **env)


@pytest.mark.parametrize("output", [".", "", " ", "./", "..", "victim", "~"])
def test_existing_or_empty_output_names_are_refused(sandbox: Sandbox, tiny_phi3: Path, output: str) -> None:
    before = sorted(p.name for p in sandbox.cwd.iterdir())
    error = one_line_error(_quantize(sandbox, tiny_phi3, "-o", output, HOME=str(sandbox.root / "victim")))
    assert "already exists" in error or "is empty" in error
    assert sandbox.cwd.is_dir() and sorted(p.name for p in sandbox.cwd.iterdir()) == before
    sandbox.assert_victims_intact()


def test_an_empty_current_directory_survives_dash_o_dot(sandbox: Sandbox, tiny_phi3: Path) -> None:
    empty = sandbox.cwd / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    done = subprocess.run(
        [sys.executable, "-m", "phi3", "quantize", str(tiny_phi3), "-b", "reference", "-p", "bf16", "-o", "."],
        capture_output=True,
        text=True,
        env=sandbox.env(),
        cwd=empty,
        timeout=600,
        check=False,
    )
    one_line_error(done)
    assert empty.is_dir() and empty.stat().st_ino == inode and not list(empty.iterdir())


@pytest.mark.parametrize("kind", ["file", "empty folder", "folder with files"])
def test_output_that_is_not_an_artifact_is_never_replaced(sandbox: Sandbox, tiny_phi3: Path, kind: str) -> None:
    target = sandbox.cwd / "out"
    if kind == "file":
        target.write_text("notes")
    else:
        target.mkdir()
        if kind == "folder with files":
            (target / "notes.txt").write_text("notes")
    for extra in ((), ("--overwrite",)):
        error = one_line_error(_quantize(sandbox, tiny_phi3, "-o", "out", *extra))
        assert "already exists" in error and "never replaces a folder it did not write" in error
    assert target.exists()
    if kind == "file":
        assert target.read_text() == "notes"
    elif kind == "folder with files":
        assert (target / "notes.txt").read_text() == "notes"


def test_an_artifact_is_replaced_only_with_overwrite(sandbox: Sandbox, tiny_phi3: Path) -> None:
    done = _quantize(sandbox, tiny_phi3, "-o", "out")
    assert done.returncode == 0, done.stderr
    manifest = sandbox.cwd / "out" / MANIFEST_NAME
    first = manifest.read_text()
    error = one_line_error(_quantize(sandbox, tiny_phi3, "-o", "out"))
    assert "--overwrite" in error and manifest.read_text() == first
    time.sleep(1.1)  # the manifest's "created" has one-second resolution
    done = _quantize(sandbox, tiny_phi3, "-o", "out", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert manifest.read_text() != first
    assert sorted(p.name for p in sandbox.cwd.iterdir()) == ["out", "victim"], "a temp or backup folder was left"


def test_output_folders_take_the_umask_mode_not_0700(sandbox: Sandbox, tiny_phi3: Path) -> None:
    done = _quantize(sandbox, tiny_phi3, "-o", "out")
    assert done.returncode == 0, done.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert (sandbox.cwd / "out").stat().st_mode & 0o777 == 0o777 & ~mask


def test_api_refuses_the_same_outputs(tiny_phi3: Path, tmp_path: Path) -> None:
    for output in ("", "  "):
        with pytest.raises(phi3.ConfigError, match="empty"):
            phi3.quantize(tiny_phi3, backend="reference", precision="bf16", output=output)
    with pytest.raises(phi3.Phi3Error, match="already exists"):
        phi3.quantize(tiny_phi3, backend="reference", precision="bf16", output=tmp_path)
    assert tmp_path.is_dir()


def test_a_killed_dash_o_build_is_cleaned_by_prune_and_by_the_next_build(sandbox: Sandbox, tiny_phi3: Path) -> None:
    """SIGKILL mid-build leaves a temp sibling; nothing trusts it, and both cleanups remove it."""
    for cleanup in ("prune", "rebuild"):
        out = sandbox.cwd / f"out-{cleanup}"
        proc = subprocess.Popen(
            [*_QUANTIZE, str(tiny_phi3), "-O", "pause_after_write=120", "-o", out.name],
            env=sandbox.env(),
            cwd=sandbox.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not list(sandbox.cwd.glob(f".{out.name}.phi3-tmp.*/*.safetensors")) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        leftovers = list(sandbox.cwd.glob(f".{out.name}.phi3-tmp.*"))
        assert leftovers, "the build never started its temp folder"
        assert not out.exists()
        if cleanup == "prune":
            done = sandbox.phi3("cache", "prune")
            assert done.returncode == 0 and str(leftovers[0]) in done.stdout
        else:
            done = _quantize(sandbox, tiny_phi3, "-o", out.name)
            assert done.returncode == 0, done.stderr
            assert (out / MANIFEST_NAME).is_file()
        assert not any(p.exists() for p in leftovers)
    sandbox.assert_victims_intact()


def test_concurrent_builds_into_one_folder_build_once(sandbox: Sandbox, tiny_phi3: Path) -> None:
    procs = [
        subprocess.Popen(
            [*_QUANTIZE, str(tiny_phi3), "-O", "pause_after_write=3", "-o", "out"],
            env=sandbox.env(),
            cwd=sandbox.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    # the loser is told what happened (issue 20: it used to be "already holds a phi3 artifact, pass --overwrite")
    assert loser.startswith("Error: another phi3 process is building into ") and "Traceback" not in loser, loser
    assert str(sandbox.cwd / "out") in loser
    assert (sandbox.cwd / "out" / MANIFEST_NAME).is_file()
