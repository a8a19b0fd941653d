"""Every strict xfail in the repository pins the exception its upstream bug raises.

A strict xfail without ``raises=`` counts *any* exception as "the upstream bug is still there": an
ImportError of a renamed helper, a vendor error of another kind, a typo. This scans every Python file
of the repository's tests, the test kit (``phi3.testing``, whose parity suite generates xfails) and the
benchmarks with ``ast`` and fails on a ``mark.xfail(strict=...)`` (decorator, ``pytest.param(marks=...)``
or generated) that has no ``raises=``, or whose ``raises=`` is as broad as ``Exception``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = [ROOT / "core", ROOT / "plugins", ROOT / "benchmarks", ROOT / "tests"]
SKIPPED_PARTS = {".nox", ".venv", "venv", "build", "dist", "node_modules", "__pycache__", ".git"}
TOO_BROAD = {"Exception", "BaseException"}
PYTEST_CONFIGS = ("pyproject.toml", "pytest.ini", "setup.cfg", "tox.ini")


def _is_xfail_mark(func: ast.expr) -> bool:
    """``pytest.mark.xfail`` / ``mark.xfail`` (not the imperative ``pytest.xfail()``)."""
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "xfail"
        and (
            (isinstance(func.value, ast.Attribute) and func.value.attr == "mark")
            or (isinstance(func.value, ast.Name) and func.value.id == "mark")
        )
    )


def _names(node: ast.expr) -> list[str]:
    """The exception names in a ``raises=`` value: ``E``, ``mod.E`` or a tuple of them."""
    if isinstance(node, ast.Tuple):
        return [name for item in node.elts for name in _names(item)]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Name):
        return [node.id]
    return ["<expression>"]


def strict_xfails_without_raises(source: str, filename: str) -> list[str]:
    """``file:line: why`` for each strict xfail mark in ``source`` that does not pin its exception."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not (isinstance(node, ast.Call) and _is_xfail_mark(node.func)):
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        strict = keywords.get("strict")
        if strict is None or (isinstance(strict, ast.Constant) and strict.value is False):
            continue  # not strict (no pytest config here sets xfail_strict: test_no_config_makes_xfails_strict)
        raises = keywords.get("raises")
        where = f"{filename}:{node.lineno}"
        if raises is None:
            problems.append(f"{where}: strict xfail without raises=")
        elif broad := sorted(TOO_BROAD & set(_names(raises))):
            problems.append(f"{where}: strict xfail with raises={broad[0]} (pin the upstream bug's own exception)")
    return problems


def _python_files() -> list[Path]:
    files = []
    for folder in SCANNED:
        for path in folder.rglob("*.py"):
            if not SKIPPED_PARTS & set(path.relative_to(ROOT).parts):
                files.append(path)
    return sorted(files)


def test_every_strict_xfail_pins_its_exception() -> None:
    files = _python_files()
    assert any(path.name == "parity.py" and "testing" in path.parts for path in files), "the test kit is not scanned"
    problems = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        if "xfail" in source:
            problems += strict_xfails_without_raises(source, str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


def test_no_config_makes_xfails_strict() -> None:
    """``xfail_strict = true`` would make an xfail without ``strict=`` strict, which the scan above skips."""
    configs = [
        path
        for name in PYTEST_CONFIGS
        for path in ROOT.rglob(name)
        if not SKIPPED_PARTS & set(path.relative_to(ROOT).parts)
    ]
    assert configs, "no pytest configuration found: is ROOT the repository?"
    assert not [path for path in configs if "xfail_strict" in path.read_text(encoding="utf-8")]


SYNTHETIC = """
import pytest
from pytest import mark

@pytest.mark.xfail(strict=True, reason="no raises")
def test_a(): ...

@pytest.mark.xfail(strict=True, raises=AssertionError, reason="pinned")
def test_b(): ...

@mark.xfail(strict=True, raises=(ValueError, Exception), reason="too broad")
def test_c(): ...

@pytest.mark.xfail(reason="not strict")
def test_d(): ...

@pytest.mark.xfail(strict=False, reason="not strict")
def test_e(): ...

def generate(reason, flag):
    marks = [pytest.mark.xfail(strict=flag, reason=reason)]
    return pytest.param(1, marks=marks)
"""


def test_the_scan_catches_a_strict_xfail_without_raises() -> None:
    found = strict_xfails_without_raises(SYNTHETIC, "synthetic.py")
    assert found == [
        "synthetic.py:5: strict xfail without raises=",
        "synthetic.py:11: strict xfail with raises=Exception (pin the upstream bug's own exception)",
        "synthetic.py:21: strict xfail without raises=",
    ]


def test_upstream_bug_converts_only_the_named_error() -> None:
    import pytest

    from phi3.testing.upstream import UpstreamBugStillThere, upstream_bug

    def prepare(value: object) -> object:
        return value[0]  # type: ignore[index]

    with (
        pytest.raises(UpstreamBugStillThere, match="not subscriptable"),
        upstream_bug(TypeError, match="not subscriptable", raised_in="prepare"),
    ):
        prepare(None)
    with (
        pytest.raises(TypeError),
        upstream_bug(TypeError, match="not subscriptable", raised_in="elsewhere"),
    ):  # the same error raised elsewhere: not the upstream bug
        prepare(None)
    with (
        pytest.raises(TypeError, match="unsupported operand"),
        upstream_bug(TypeError, match="not subscriptable"),
    ):  # another message: not the upstream bug
        _ = None + 1  # type: ignore[operator]
    with pytest.raises(ImportError), upstream_bug(TypeError, match=""):  # another type: never converted
        raise ImportError("a renamed helper")
    assert issubclass(UpstreamBugStillThere, AssertionError)
