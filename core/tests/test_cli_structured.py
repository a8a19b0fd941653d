"""``phi3 generate --json-schema FILE / --json-object / --regex`` and the STRUCTURED OUTPUT column.

The happy paths run the real CLI in a subprocess on the reference backend (llguidance installed by
the nox core session); bad input must be one line, exit 1, and never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phi3 import plugins
from phi3.cli import cli
from phi3.testing import structured

BASE = ("-b", "reference", "-p", "fp32", "-n", "120")
SCHEMA = structured.SCHEMAS["enum_and_pattern"]
needs_llguidance = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llguidance") is None, reason="needs phi3-core[structured]"
)


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA, indent=2), encoding="utf-8")
    return path


@needs_llguidance
def test_json_schema_file_constrains_the_answer_and_json_output_keeps_its_shape(
    run_phi3: Any, tiny_phi3: Path, schema_file: Path
) -> None:
    import jsonschema

    done = run_phi3("generate", str(tiny_phi3), "Hello", *BASE, "--json-schema", str(schema_file), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    free = json.loads(run_phi3("generate", str(tiny_phi3), "Hello", *BASE[:-1], "2", "--json").stdout)
    assert set(data) == set(free)  # --json's shape does not change with a constraint
    assert data["finish_reason"] == "eos"
    jsonschema.validate(json.loads(data["text"]), SCHEMA)


@needs_llguidance
def test_json_schema_from_stdin_streams_a_valid_answer(run_phi3: Any, tiny_phi3: Path) -> None:
    import jsonschema

    done = run_phi3(
        "generate", str(tiny_phi3), "Hello", *BASE, "--sample", "--seed", "4", "--json-schema", "-",
        input=json.dumps(SCHEMA),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), SCHEMA)
    assert "stop: eos" in done.stderr


@needs_llguidance
def test_json_object_and_regex(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3("generate", str(tiny_phi3), "Hello", *BASE, "--regex", structured.REGEX, "--no-stream")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(structured.REGEX, done.stdout.rstrip("\n")), done.stdout
    done = run_phi3("generate", str(tiny_phi3), "Hello", "-b", "reference", "-p", "fp32", "-n", "60", "--json-object")
    assert done.returncode == 0, done.stderr
    if "stop: length" not in done.stderr:  # "any object" is unbounded; one that closed must parse
        assert isinstance(json.loads(done.stdout), dict)
    else:
        assert done.stdout.startswith("{")


def _run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=input, prog_name="phi3")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tmp: str(tmp / "missing.json"), r"cannot use --json-schema file .*missing\.json.*: it does not exist"),
        (lambda tmp: str(tmp), r"cannot use --json-schema file .*: a folder stands where a file is needed"),
        (lambda tmp: _write(tmp / "bad.json", b"{oops"), r"--json-schema .*bad\.json is not JSON"),
        (lambda tmp: _write(tmp / "latin.json", b'{"\xe9":1}'), r"--json-schema file .*latin\.json is not UTF-8"),
        (lambda tmp: _write(tmp / "wrong.json", b'{"type": "objekt"}'), r"json_schema is not a valid JSON Schema"),
    ],
)
def test_bad_schema_files_are_one_line_errors(tmp_path: Path, tiny_phi3: Path, make: Any, fragment: str) -> None:
    result = _run("generate", str(tiny_phi3), "Hi", *BASE, "--json-schema", make(tmp_path))
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert re.search(fragment, lines[0]), result.output
    assert lines[0].startswith("Error: ") and len(lines) <= 2 and "Traceback" not in result.output


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--json-object", "--regex", "a+"), "give at most one of json_schema, json_object and regex"),
        (("--regex", "(?<=a)b"), "lookaround"),
        (("--regex", "[z-a]"), "regex does not compile"),
    ],
)
def test_bad_constraint_options_are_one_line_errors(tiny_phi3: Path, args: tuple[str, ...], fragment: str) -> None:
    result = _run("generate", str(tiny_phi3), "Hi", *BASE, *args)
    assert result.exit_code == 1 and fragment in result.output and "Traceback" not in result.output


def test_prompt_and_schema_cannot_both_read_stdin(tiny_phi3: Path) -> None:
    result = _run("generate", str(tiny_phi3), "-", *BASE, "--json-schema", "-", input="{}")
    assert result.exit_code == 1 and "cannot both read stdin" in result.output


def test_a_backend_that_cannot_enforce_it_is_refused_by_the_cli(tiny_phi3: Path) -> None:
    from declaring_backend import Declaring

    plugin = Declaring(())
    plugins.get_registry().register(plugin, "declaring")
    result = _run("generate", str(tiny_phi3), "Hi", "-b", "declaring", "-p", "fp32", "--json-object")
    assert result.exit_code == 1, result.output
    assert "cannot enforce json_object output; it enforces no structured output" in result.output
    assert plugin.generate_calls == 0


HIDE_LLGUIDANCE = """
import sys


class HideLlguidance:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "llguidance":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, HideLlguidance())
from phi3.cli import main

sys.argv[0] = "phi3"
main()
"""
"""``phi3 ARGS`` as an installation without llguidance runs it: the import system finds no such module."""


def _reference_listing(run: Any) -> tuple[list[str], str]:
    """What ``list-backends`` says the reference backend enforces: the --json list and the table row."""
    done = run("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    ref = next(b for b in json.loads(done.stdout)["backends"] if b["name"] == "reference")
    table = run("list-backends")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(line for line in lines if line.startswith("BACKEND"))
    start, end = header.index("STRUCTURED OUTPUT"), header.index("LORA ADAPTERS")
    row = next(line for line in lines if line.startswith("reference"))
    return list(ref["structured_output"]), row[start:end].strip()  # that column's cell


@needs_llguidance
def test_list_backends_shows_what_each_backend_enforces(run_phi3: Any) -> None:
    enforced, row = _reference_listing(run_phi3)
    assert enforced == ["json_schema", "json_object", "regex"]
    assert row == "json_schema, json_object, regex"


def test_without_llguidance_the_reference_backend_enforces_nothing(phi3_home: Path, tmp_path: Path) -> None:
    """The other half, run here whether or not llguidance is installed: a listing without it says none
    (never derived from what this environment happens to have)."""
    import os
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PHI3_HOME": str(phi3_home), "HF_HUB_OFFLINE": "1"}
        return subprocess.run(
            [sys.executable, "-c", HIDE_LLGUIDANCE, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )

    enforced, row = _reference_listing(run)
    assert enforced == []
    assert row == "none"
