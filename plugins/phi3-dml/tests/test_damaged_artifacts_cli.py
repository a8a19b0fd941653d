"""Corrupt or unreadable dml artifacts through the real CLI (issue 20, item 3).

Each damage ends in one ``Error:`` line that names the damaged file and the command that fixes it:
``phi3 quantize MODEL -o DIR --overwrite`` for a folder written with ``-o``, ``phi3 cache rm KEY``
for an artifact in PHI3_HOME (the hint core's ``rebuild_hint`` words for every backend).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from phi3.cache import MANIFEST_NAME
from phi3.testing.fixtures import RunPhi3


@pytest.fixture(scope="module")
def built(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One int4 artifact written with ``-o`` (copied before each damage)."""
    out = tmp_path_factory.mktemp("dml-out") / "artifact"
    done = subprocess.run(
        [sys.executable, "-m", "phi3", "quantize", str(tiny_phi3), "-b", "dml", "-p", "int4", "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def _garble(path: Path) -> None:
    """Same size, so phi3's manifest size check passes and the runtime must be the one to notice."""
    path.write_bytes(b"\x7f" * path.stat().st_size)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _one_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "this is a bug in phi3" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return done.stderr[done.stderr.index("Error: ") :]


DAMAGES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "truncated model.onnx": ("model.onnx", _truncate),
    "garbled model.onnx": ("model.onnx", _garble),
    "truncated genai_config.json": ("genai_config.json", _truncate),
    "garbled genai_config.json": ("genai_config.json", _garble),
    "garbled tokenizer.json": ("tokenizer.json", _garble),
    "garbled tokenizer_config.json": ("tokenizer_config.json", _garble),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_output_folder_names_the_file_and_the_rebuild(
    built: Path, tmp_path: Path, run_phi3: RunPhi3, damage: str
) -> None:
    name, spoil = DAMAGES[damage]
    folder = tmp_path / "copy"
    shutil.copytree(built, folder)
    spoil(folder / name)
    done = run_phi3("generate", str(folder), "Hi", "-n", "2")
    error = _one_error(done)
    assert str(folder / name) in error, error
    assert f"phi3 quantize MODEL -o {folder} --overwrite" in error, error
    assert "phi3 cache rm" not in error


def test_an_unreadable_file_is_named(built: Path) -> None:
    """As root (whom permissions do not stop) the CLI runs as nobody, in a folder that user can reach."""
    as_user: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if setpriv else []
        if not as_user or subprocess.run([*as_user, sys.executable, "-c", "import phi3"], check=False).returncode:
            pytest.skip("running as root, and cannot run the CLI as another user here")
    base = Path(tempfile.mkdtemp(prefix="phi3-unreadable-"))
    try:
        base.chmod(0o755)
        folder, home = base / "copy", base / "home"
        shutil.copytree(built, folder)
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        for name in ("model.onnx.data", "genai_config.json"):
            for path in folder.iterdir():
                path.chmod(0o644)
            (folder / name).chmod(0)
            done = subprocess.run(
                [*as_user, sys.executable, "-m", "phi3", "generate", str(folder), "Hi", "-n", "2"],
                capture_output=True,
                text=True,
                env={**os.environ, "PHI3_HOME": str(home), "HOME": str(home), "HF_HUB_OFFLINE": "1"},
                cwd=home,
                timeout=600,
                check=False,
            )
            error = _one_error(done)
            assert f"artifact file {folder / name} cannot be read: Permission denied" in error, error
            assert f"fix its permissions, or rebuild it: phi3 quantize MODEL -o {folder} --overwrite" in error
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_damaged_cached_artifact_says_phi3_cache_rm(tiny_phi3: Path, run_phi3: RunPhi3, phi3_home: Path) -> None:
    done = run_phi3("quantize", str(tiny_phi3), "-b", "dml", "-p", "int8", "--json")
    assert done.returncode == 0, done.stderr
    folder = Path(json.loads(done.stdout)["path"])  # the session's cache may hold other dml artifacts
    assert folder.parent.parent == phi3_home / "artifacts" and (folder / MANIFEST_NAME).is_file(), folder
    try:
        _garble(folder / "genai_config.json")
        error = _one_error(run_phi3("generate", str(tiny_phi3), "Hi", "-b", "dml", "-p", "int8", "-n", "2"))
        assert str(folder / "genai_config.json") in error, error
        assert f"phi3 cache rm {folder.name}" in error, error
    finally:
        shutil.rmtree(folder)  # leave the session cache healthy for later tests
