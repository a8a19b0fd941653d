"""pytest fixtures for backend test suites: ``pytest_plugins = ["phi3.testing.fixtures"]``.

- ``phi3_home`` (session, autouse): an isolated ``PHI3_HOME`` shared by the whole test session, so
  artifacts built by one test are cache hits in the next, and nothing touches the user's cache.
  It also sets ``HF_HUB_OFFLINE=1``: tests never reach for the hub.
- ``phi3_home_kept`` (autouse): fails the test that leaves ``PHI3_HOME`` changed or unset, because
  every later test in the process would then write to the user's real cache.
- ``tiny_phi3`` (session): the tiny Phi-3 checkpoint built offline by :func:`make_tiny_phi3`.
- ``run_phi3``: runs the real ``phi3`` CLI in a subprocess (``python -m phi3 ...``).

And a session check: when the tests run inside a git work tree, a file that appears there untracked
during the run (a vendor cache dir written to the working directory, an artifact built beside the
sources) fails the session, naming the files. A test writes under its tmp dir, nowhere else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phi3 import plugins

_UNTRACKED_AT_START = pytest.StashKey[tuple[Path, frozenset[str]] | None]()


def _untracked(root: Path | None = None) -> tuple[Path, frozenset[str]] | None:
    """The git work tree around the current directory and its untracked files (None outside git)."""
    try:
        top = root or Path(
            subprocess.run(
                ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        )
        listed = subprocess.run(
            ["git", "-C", str(top), "ls-files", "--others", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return top, frozenset(line for line in listed.splitlines() if line)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_UNTRACKED_AT_START] = _untracked()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_UNTRACKED_AT_START, None)
    if before is None:
        return
    after = _untracked(before[0])
    new = sorted(after[1] - before[1]) if after is not None else []
    if new:
        shown = ", ".join(new[:10]) + (f" and {len(new) - 10} more" if len(new) > 10 else "")
        session.config.get_terminal_writer().line(
            f"ERROR: the tests left untracked files in the work tree {before[0]}: {shown}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def phi3_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("phi3-home")
    saved = {name: os.environ.get(name) for name in ("PHI3_HOME", "HF_HUB_OFFLINE")}
    os.environ["PHI3_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield home
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def phi3_home_kept(phi3_home: Path) -> Iterator[None]:
    yield
    now = os.environ.get("PHI3_HOME")
    if now != str(phi3_home):
        os.environ["PHI3_HOME"] = str(phi3_home)  # so that later tests stay isolated
        pytest.fail(
            f"this test left PHI3_HOME={now!r} (the session's is {phi3_home}): "
            "set it with monkeypatch.setenv, which restores it"
        )


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from phi3.testing.tiny_model import make_tiny_phi3

    return make_tiny_phi3(tmp_path_factory.mktemp("models") / "tiny-phi3")


@pytest.fixture
def fresh_registry() -> Iterator[None]:
    """Reload plugins from entry points before and after the test (for env-var experiments)."""
    plugins.reset_registry()
    yield
    plugins.reset_registry()


RunPhi3 = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_phi3(phi3_home: Path, tmp_path: Path) -> RunPhi3:
    """Run ``python -m phi3 ARGS`` for real, in an empty working directory, and return the result."""

    def run(
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 900,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PHI3_HOME": str(phi3_home), "HF_HUB_OFFLINE": "1", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "phi3", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=cwd or tmp_path,
            check=False,
        )

    return run
