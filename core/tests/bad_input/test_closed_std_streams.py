"""The CLI with a standard stream the caller closed (``<&-``, ``>&-``, ``2>&-``): its documented exit
status, never a traceback (closed stdin was "unexpected AttributeError ... bug in phi3", closed stdout
an AttributeError traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CHAT = ["chat", "smoke", "-b", "reference", "-p", "fp32", "--max-new-tokens", "4"]


def _closing(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def _phi3(
    args: list[str], phi3_home: Path, closed: int, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PHI3_HOME": str(phi3_home), "HF_HUB_OFFLINE": "1"}
    pipes: dict[str, int] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run(
        [sys.executable, "-m", "phi3", *args],
        input=stdin if closed != 0 else None,
        stdin=None if closed != 0 else subprocess.DEVNULL,
        **pipes,
        env=env,
        timeout=600,
        preexec_fn=_closing(closed),
        check=False,
    )


def test_chat_with_stdin_closed_ends_at_once(phi3_home: Path) -> None:
    done = _phi3(CHAT, phi3_home, closed=0)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"bug in phi3" not in done.stderr


def test_chat_with_stdout_closed_answers_nobody_and_exits_0(phi3_home: Path) -> None:
    done = _phi3(CHAT, phi3_home, closed=1, stdin=b"Hi\n")
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"AttributeError" not in done.stderr


@pytest.mark.parametrize("args", [["generate", "no-such-model-here", "Hi"], [*CHAT[:1], "no-such-model-here"]])
def test_an_error_with_stderr_closed_still_exits_1(phi3_home: Path, args: list[str]) -> None:
    done = _phi3(args, phi3_home, closed=2, stdin=b"")
    assert done.returncode == 1
    assert b"Traceback" not in done.stdout
