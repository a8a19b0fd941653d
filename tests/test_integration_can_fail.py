"""``test_integration.py`` fails when an installed plugin is not usable: rigged plugins, a child pytest.

Two plugin distributions are "installed" for the child only (a dist-info folder with a ``phi3`` entry
point on its PYTHONPATH, which is all ``importlib.metadata`` needs): one whose import fails (listed as
``broken``) and one that reports a missing vendor library (reusing the reference backend's hooks). The
integration checks must fail naming both, whatever PHI3_EXPECTED_BACKENDS says, unless it declares the
missing dependency explicitly; ``broken`` can never be expected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_integration import EXPECTED, INSTALLED, expected_backends

INTEGRATION = Path(__file__).with_name("test_integration.py")
CHECKS = "installed_plugins_are_the_expected_ones or every_installed_plugin_is_listed_and_usable"
MISSING_MODULE = textwrap.dedent(
    '''
    """Valid hooks (the reference backend's), but it reports a vendor library missing."""
    import dataclasses

    from phi3 import BackendStatus, hookimpl
    from phi3.testing import reference_backend

    globals().update(
        {name: value for name, value in vars(reference_backend).items()
         if name.startswith("phi3_") and name != "phi3_backend_info"}
    )


    @hookimpl
    def phi3_backend_info():
        return dataclasses.replace(
            reference_backend.phi3_backend_info(),
            name="rigged_missing",
            status=BackendStatus.MISSING_DEPENDENCY,
            detail="rigged: needs libnothing (pip install nothing)",
        )
    '''
)


@pytest.fixture(scope="module")
def rigged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rigged-plugins")
    dist_info = folder / "phi3_rigged-0.0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: phi3-rigged\nVersion: 0.0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(
        "[phi3]\nrigged_import = phi3_rigged_no_such_vendor_module\nrigged_missing = phi3_rigged_missing\n",
        encoding="utf-8",
    )
    (folder / "phi3_rigged_missing.py").write_text(MISSING_MODULE, encoding="utf-8")
    return folder


def _child(rigged: Path, tmp_path: Path, expected: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PHI3_EXPECTED_BACKENDS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(rigged), os.environ.get("PYTHONPATH", "")]))
    if expected is not None:
        env["PHI3_EXPECTED_BACKENDS"] = expected
    command = [sys.executable, "-m", "pytest", "-q", "--tb=short", "-p", "no:cacheprovider", "-k", CHECKS]
    return subprocess.run(
        [*command, f"--basetemp={tmp_path / 'child'}", str(INTEGRATION)],
        cwd=INTEGRATION.parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


BROKEN = "rigged_import (phi3-rigged): status 'broken', expected 'available': import failed"
NO_SUCH_MODULE = "No module named 'phi3_rigged_no_such_vendor_module'"
MISSING = "rigged_missing (phi3-rigged): status 'missing dependency', expected 'available': rigged: needs libnothing"


def _declared(*extra: str) -> str:
    """This session's expectation (when unset: its installed plugins, all available) plus ``extra``."""
    expected = EXPECTED if EXPECTED is not None else dict.fromkeys(INSTALLED, "available")
    return ",".join([*(f"{name}={status}" for name, status in expected.items()), *extra])


def test_an_unexpected_plugin_fails_the_integration_session(rigged: Path, tmp_path: Path) -> None:
    done = _child(rigged, tmp_path, _declared())
    assert done.returncode == 1, done.stdout[-3000:]
    assert "2 failed" in done.stdout, done.stdout[-3000:]
    assert "rigged_import" in done.stdout and "!= PHI3_EXPECTED_BACKENDS" in done.stdout, done.stdout[-3000:]
    for fragment in (BROKEN, NO_SUCH_MODULE, MISSING):
        assert fragment in done.stdout, (fragment, done.stdout[-3000:])


def test_without_expectations_every_installed_plugin_must_be_available(rigged: Path, tmp_path: Path) -> None:
    done = _child(rigged, tmp_path, None)
    assert done.returncode == 1, done.stdout[-3000:]
    for fragment in (BROKEN, NO_SUCH_MODULE, MISSING):
        assert fragment in done.stdout, (fragment, done.stdout[-3000:])


def test_a_declared_missing_dependency_passes_but_broken_never_does(rigged: Path, tmp_path: Path) -> None:
    done = _child(rigged, tmp_path, _declared("rigged_import", "rigged_missing=missing dependency"))
    assert done.returncode == 1, done.stdout[-3000:]
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert BROKEN in done.stdout and "rigged_missing" not in done.stdout, done.stdout[-3000:]
    with pytest.raises(ValueError, match="'broken'"):
        expected_backends("openvino,rigged_import=broken")
