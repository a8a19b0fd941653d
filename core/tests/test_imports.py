"""``import phi3`` and ``phi3 list-backends`` must not import any vendor library."""

from __future__ import annotations

import json
import subprocess
import sys

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


SERVER_MODULES = ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client", "anyio")
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
    assert "fastapi" in _imported_server_modules("import fastapi")
