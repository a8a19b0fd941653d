"""Every installed backend together, through the real CLI."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from phi3.testing.suite import VENDOR_MODULES

EXPECTED = [name for name in os.environ.get("PHI3_EXPECTED_BACKENDS", "").split(",") if name]


def _listed(run_phi3: Any) -> dict[str, dict[str, Any]]:
    done = run_phi3("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    return {b["name"]: b for b in json.loads(done.stdout)["backends"]}


def _cpu_device(backend: dict[str, Any]) -> str:
    for device in backend["devices"] + backend["override_devices"]:
        if device["kind"] == "cpu":
            return str(device["name"])
    raise AssertionError(f"{backend['name']} offers no CPU device: {backend}")


def test_every_installed_plugin_is_listed_and_healthy(run_phi3: Any) -> None:
    listed = _listed(run_phi3)
    for name in EXPECTED:
        assert name in listed, f"{name} missing from phi3 list-backends"
        assert listed[name]["status"] != "broken", listed[name]["error"]


def test_listing_with_all_plugins_imports_no_vendor_library(run_phi3: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    code = (
        "import json, sys\nfrom phi3.cli import cli\n"
        "try:\n    cli(['list-backends'], prog_name='phi3')\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {VENDOR_MODULES!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("backend", EXPECTED)
def test_generate_through_each_backend_on_cpu(run_phi3: Any, backend: str) -> None:
    info = _listed(run_phi3)[backend]
    if info["status"] == "missing dependency":
        pytest.skip(f"{backend}: {info['detail']}")
    done = run_phi3(
        "generate", "smoke", "Hi", "-b", backend, "-d", _cpu_device(info), "-n", "6", "--ignore-eos", "--json"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backend"] == backend and result["new_tokens"] == 6
    assert result["device"].lower().startswith("cpu")


def test_auto_says_what_it_picked(run_phi3: Any) -> None:
    if not EXPECTED:
        pytest.skip("no plugin installed")
    done = run_phi3("generate", "smoke", "Hi", "-n", "4", "--ignore-eos")
    assert done.returncode == 0, done.stderr
    assert "auto: picked backend" in done.stderr and "tokens/s" in done.stderr
