"""``phi3 chat``: lines starting with / are the CLI's commands, never sent to the model."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("reference_installed")


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


def chat(run_phi3: Any, *lines: str) -> Any:
    done = run_phi3(
        "chat", "smoke", "-b", "reference", "-p", "fp32", "-n", "40", input="".join(f"{x}\n" for x in lines)
    )
    assert done.returncode == 0, done.stderr
    return done


def test_help_and_unknown_commands_are_answered_by_the_cli(run_phi3: Any) -> None:
    done = chat(run_phi3, "/help", "/foo bar", "What is 2 + 3?")
    for command in ("/help", "/reset", "/exit"):
        assert command in done.stderr
    assert "unknown command /foo; /help lists the commands" in done.stderr
    # one answer only (a sum, in the toy model's form): neither /help nor /foo reached the model
    assert re.fullmatch(r"\d+ \+ \d+ = \d+\.", done.stdout.strip()), done.stdout
    assert done.stderr.count("tokens/s") == 1


def test_the_conversation_is_kept_and_reset_forgets_it(run_phi3: Any) -> None:
    done = chat(run_phi3, "My name is Anna.", "What is my name?", "/reset", "/exit", "Never sent")
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("Your name is ") and lines[0].startswith("Nice to meet you")
    assert "(conversation reset)" in done.stderr and "Never sent" not in done.stdout
