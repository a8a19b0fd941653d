"""``import phi3`` and ``phi3 list-backends`` must not import any vendor library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phi3.testing.suite import VENDOR_MODULES

CHECK = f"""
import json, sys
{{setup}}
vendor = {VENDOR_MODULES!r}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in vendor)))
"""


def _imported(setup: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(setup=setup)], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_phi3_imports_no_vendor_library() -> None:
    assert _imported("import phi3") == []


def test_list_backends_imports_no_vendor_library() -> None:
    setup = (
        "from phi3.cli import cli\n"
        "try:\n    cli(['list-backends', '--json'], prog_name='phi3')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )
    assert _imported(setup) == []


def test_the_check_itself_sees_vendor_imports() -> None:
    assert "json" not in VENDOR_MODULES
    assert _imported("import phi3.testing.reference\nimport torch") == ["torch"] or "torch" in _imported("import torch")


def test_module_docstrings_name_only_modules_that_exist() -> None:
    """errors.py once pointed readers at ``phi3.dispatch``, which never existed."""
    import ast
    import re
    from pathlib import Path

    import phi3

    root = Path(phi3.__file__).parent
    files = {
        ".".join(("phi3", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
    }
    for name, path in sorted(files.items()):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for ref in re.findall(r":mod:`(phi3(?:\.\w+)*)`", doc):
            assert ref in files, f"{name}'s docstring names {ref}, which does not exist"


def _phi3_imports(path: object) -> set[str]:
    """The ``phi3...`` modules a source file imports at any level (top or inside functions)."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(str(path)).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("phi3"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("phi3"))
    return found


def test_the_cli_imports_go_one_way() -> None:
    """cli -> bench_cli / server.command -> cli_support; never back (they once imported each other)."""
    from pathlib import Path

    import phi3

    root = Path(phi3.__file__).parent
    assert "phi3.cli" not in _phi3_imports(root / "bench_cli.py")
    assert not {"phi3.cli", "phi3.bench_cli"} & _phi3_imports(root / "cli_support.py")
    assert "phi3.cli" not in _phi3_imports(root / "server" / "command.py")
    for part in (root / "bench").glob("*.py"):
        assert not {"phi3.cli", "phi3.bench_cli", "phi3.cli_support"} & _phi3_imports(part), part


def test_the_cli_does_not_pay_for_the_benchmark() -> None:
    """`phi3 list-backends` imports neither the bench machinery nor its chart library."""
    setup = (
        "from phi3.cli import cli\n"
        "try:\n    cli(['list-backends'], prog_name='phi3')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "assert not [m for m in sys.modules if m == 'phi3.bench' or m.startswith(('phi3.bench.', 'matplotlib'))]\n"
    )
    assert _imported(setup) == []


SERVER_MODULES = ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "anyio", "ray")
"""phi3 serve's stack: only `phi3 serve` itself may import it."""


def _imported_server_modules(setup: str) -> list[str]:
    check = CHECK.replace(repr(VENDOR_MODULES), repr(SERVER_MODULES))
    done = subprocess.run(
        [sys.executable, "-c", check.format(setup=setup)], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_phi3_and_list_backends_import_no_server_module() -> None:
    assert _imported_server_modules("import phi3") == []
    setup = (
        "from phi3.cli import cli\n"
        "try:\n    cli(['list-backends', '--json'], prog_name='phi3')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )
    assert _imported_server_modules(setup) == []


def test_serve_help_imports_no_server_module() -> None:
    setup = (
        "from phi3.cli import cli\n"
        "try:\n    cli(['serve', '--help'], prog_name='phi3')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
    )
    assert _imported_server_modules(setup) == []


def test_the_server_check_sees_server_imports() -> None:
    pytest.importorskip("fastapi", reason="phi3-core[serve] is not installed in this session")
    assert "fastapi" in _imported_server_modules("import fastapi")
