"""The test kit fails a session that leaves untracked files in the git work tree (a 412 KB OpenVINO
compiled-model blob was once committed from a test run's working directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = 'pytest_plugins = ["phi3.testing.fixtures"]\n'
LEAKING = 'from pathlib import Path\n\n\ndef test_leaks():\n    Path("cache-blob.bin").write_bytes(b"x")\n'
CLEAN = "def test_clean(tmp_path):\n    (tmp_path / 'ok.bin').write_bytes(b'x')\n"


def _run(repo: Path, body: str) -> subprocess.CompletedProcess[str]:
    (repo / "test_example.py").write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=60)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    return tmp_path


def test_a_file_left_in_the_work_tree_fails_the_session(repo: Path) -> None:
    done = _run(repo, LEAKING)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "left untracked files in the work tree" in done.stdout and "cache-blob.bin" in done.stdout


def test_a_session_that_writes_under_its_tmp_dir_passes(repo: Path) -> None:
    done = _run(repo, CLEAN)
    assert done.returncode == 0, done.stdout + done.stderr
