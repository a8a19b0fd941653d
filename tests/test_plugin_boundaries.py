"""No plugin reaches into another plugin's private modules; what one needs is the other's public API.
The benchmark scripts (``benchmarks/``) are held to the same rule: they may import any plugin's public API
only, never one of its private modules.

Read from the source (AST), so it holds for every import, including those inside functions, and
needs nothing installed. A plugin's public API for other distributions is its ``<package>.api``
module (phi3-openvino's is documented in its README); its top-level package is public too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = {
    folder.name: next((folder / "src").glob("phi3_*"))
    for folder in sorted((ROOT / "plugins").iterdir())
    if (folder / "src").is_dir() and any((folder / "src").glob("phi3_*"))
}
PACKAGES = {path.name: name for name, path in PLUGINS.items()}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _private(module: str) -> bool:
    """``phi3_openvino.export`` is private; ``phi3_openvino``, ``phi3_openvino.api[.X]`` are not."""
    parts = module.split(".")
    return len(parts) > 1 and parts[1] not in ("api", "__version__")


def _violations(owner: str | None, source_dir: Path, root: Path = ROOT) -> list[str]:
    """Private imports of plugins other than ``owner`` (None: of every plugin) under ``source_dir``."""
    own_package = PLUGINS[owner].name if owner is not None else None
    bad = []
    for path in sorted(source_dir.rglob("*.py")):
        for line, module in _imports(path):
            package = module.split(".")[0]
            if package in PACKAGES and package != own_package and _private(module):
                # `from phi3_openvino import devices` names a private module as an attribute
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("owner", list(PLUGINS))
def test_no_plugin_imports_another_plugins_private_modules(owner: str) -> None:
    folder = ROOT / "plugins" / owner
    assert _violations(owner, folder / "src") + _violations(owner, folder / "tests") == []


def test_benchmarks_use_only_the_plugins_public_apis() -> None:
    assert _violations(None, ROOT / "benchmarks") == []


def test_the_benchmark_check_sees_a_private_import(tmp_path: Path) -> None:
    """Outside any plugin every plugin is "another": ``phi3_openvino._version`` is reported, the API is not."""
    if "phi3-openvino" not in PLUGINS:
        pytest.skip("phi3-openvino is not in this checkout")
    (tmp_path / "bench.py").write_text(
        "from phi3_openvino._version import __version__\nfrom phi3_openvino.api import DEFAULT_OV_CONFIG\n"
    )
    assert _violations(None, tmp_path, root=tmp_path) == [
        "bench.py:1 imports phi3_openvino._version",
        "bench.py:1 imports phi3_openvino._version.__version__",
    ]


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The rule itself can fail: a module that imports phi3_openvino.export is reported."""
    if "phi3-openvino" not in PLUGINS or len(PLUGINS) < 2:
        pytest.skip("needs phi3-openvino and another plugin in this checkout")
    other = next(name for name in PLUGINS if name != "phi3-openvino")
    fake = tmp_path / "src"
    fake.mkdir()
    (fake / "m.py").write_text(
        "def f():\n    from phi3_openvino.export import quantize\n    import phi3_openvino.api\n"
    )
    assert _violations(other, fake, root=tmp_path) == [
        "src/m.py:2 imports phi3_openvino.export",
        "src/m.py:2 imports phi3_openvino.export.quantize",
    ]


def test_the_public_api_names_exist() -> None:
    """Every name phi3_openvino.api lists resolves (without importing it: it may be uninstalled here)."""
    api = PLUGINS.get("phi3-openvino")
    if api is None:
        pytest.skip("phi3-openvino is not in this checkout")
    tree = ast.parse((api / "api.py").read_text(encoding="utf-8"))
    exports = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS"
    )
    table = ast.literal_eval(exports)
    for name, (module, attribute) in table.items():
        source = api.parent / (module.replace(".", "/") + ".py")
        body = ast.parse(source.read_text(encoding="utf-8")).body
        defined = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {n.target.id for n in body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        defined |= {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert attribute in defined, f"phi3_openvino.api.{name} points at {module}.{attribute}, which does not exist"
