"""docs/architecture.md covers every module of phi3-core, so the module map a newcomer reads is whole.

A module is covered when the doc names its file (``tools.py``, ``server/app.py``, or a pattern such as
``ray_*.py``), or, inside a subpackage, when the package's ``__init__`` docstring lists it
(``:mod:`~phi3.server.app```, as ``server/__init__.py`` does). Every subpackage must be named too
(``server/``). Modules whose name starts with ``_`` (``_version.py``) are left out.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "core" / "src" / "phi3"


def missing_from(doc: str, package: Path) -> list[str]:
    """The modules and subpackages of ``package`` (a folder) that ``doc`` does not cover."""
    files = set(re.findall(r"[\w*./-]+\.py\b", doc))
    patterns = [name for name in files if "*" in name]

    def named(relative: str) -> bool:
        leaf = relative.rpartition("/")[2]
        return (
            relative in files
            or leaf in files
            or any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(leaf, p) for p in patterns)
        )

    missing: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        parts = relative.split("/")
        if path.name == "__init__.py":
            if len(parts) > 1 and f"{'/'.join(parts[:-1])}/" not in doc:
                missing.append(f"{'/'.join(parts[:-1])}/")
            continue
        if (path.name.startswith("_") and path.name != "__main__.py") or parts[0].startswith("_"):
            continue
        if named(relative):
            continue
        if len(parts) > 1:
            init = path.parent / "__init__.py"
            listed = (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "") if init.is_file() else ""
            dotted = ".".join(["phi3", *parts]).removesuffix(".py")
            if re.search(rf"~?{re.escape(dotted)}\b", listed):
                continue
        missing.append(relative)
    return missing


def test_the_check_finds_a_module_left_out(tmp_path: Path) -> None:
    package = tmp_path / "phi3"
    (package / "server").mkdir(parents=True)
    for name in ("__init__.py", "_version.py", "model.py", "tools.py"):
        (package / name).write_text("")
    (package / "server" / "__init__.py").write_text('"""- :mod:`~phi3.server.app`: routes."""\n')
    for name in ("app.py", "ray_one.py", "pool.py"):
        (package / "server" / name).write_text("")
    doc = "`model.py` and `server/`: `ray_*.py` run on Ray."
    assert missing_from(doc, package) == ["server/pool.py", "tools.py"]
    assert missing_from(doc + " `tools.py`, `pool.py`", package) == []
    assert missing_from("`model.py` `tools.py` `app.py` `ray_one.py` `pool.py`", package) == ["server/"]


def test_architecture_doc_covers_every_core_module() -> None:
    missing = missing_from(DOC.read_text(encoding="utf-8"), PACKAGE)
    assert not missing, f"docs/architecture.md does not cover: {', '.join(missing)} (add a row or a mention)"


def test_architecture_doc_walks_the_whole_flow() -> None:
    doc = DOC.read_text(encoding="utf-8")
    assert "model id -> artifact -> session -> tokens -> HTTP" in doc


@pytest.mark.parametrize("name", ["tools.py", "chat.py", "engine_hooks.py", "structured_output.py", "server/"])
def test_the_modules_the_issue_found_missing_are_named(name: str) -> None:
    assert name in DOC.read_text(encoding="utf-8")
