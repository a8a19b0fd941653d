"""README.md and docs/*.md name only ``phi3`` commands and options that exist.

Every ``--option`` the docs mention must be an option of some ``phi3`` command (read from the click
command tree, not a list kept by hand), except the few that belong to other tools the docs show
(``FOREIGN``); every ``phi3 COMMAND`` in a code block must be a command.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from phi3.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OPTIONS_UNCHECKED = {"writing-a-backend.md"}
"""Shows other tools' command lines (pip, pytest, a vendor's converter) beside phi3's: its phi3
commands are checked, its options are not."""
FOREIGN = {
    "--resolution": "uv pip install --resolution lowest-direct (README, the lowest nox session)",
    "--address": "ray start (docs/ray.md)",
    "--head": "ray start (docs/ray.md)",
    "--num-cpus": "ray start (docs/ray.md)",
    "--resources": "ray start (docs/ray.md)",
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_LINE = re.compile(r"^\s*(?:\$\s*)?phi3 ([a-z][a-z-]*)", re.MULTILINE)


def cli_options(command: click.Command) -> set[str]:
    options = {name for p in command.params if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            options |= cli_options(sub)
    return options


def unknown_options(text: str, known: set[str]) -> list[str]:
    return sorted(set(OPTION.findall(text)) - known - set(FOREIGN))


def code_blocks(text: str) -> str:
    return "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL))


def test_the_check_finds_an_option_phi3_does_not_have() -> None:
    known = cli_options(cli)
    assert "--json" in known and "--allow-any-model" in known  # a subcommand's (serve) options are read too
    assert unknown_options("`phi3 generate --json` and `--no-such-flag`", known) == ["--no-such-flag"]


def test_docs_name_only_options_phi3_has() -> None:
    known = cli_options(cli)
    problems = {
        doc.name: unknown_options(doc.read_text(encoding="utf-8"), known)
        for doc in DOCS
        if doc.name not in OPTIONS_UNCHECKED
    }
    assert not any(problems.values()), f"options the docs name that no phi3 command has: {problems}"


def test_docs_run_only_commands_phi3_has() -> None:
    assert isinstance(cli, click.Group)
    commands = set(cli.commands)
    for doc in DOCS:
        used = set(COMMAND_LINE.findall(code_blocks(doc.read_text(encoding="utf-8"))))
        assert used <= commands, f"{doc.name} runs phi3 {sorted(used - commands)}, which is no command"
