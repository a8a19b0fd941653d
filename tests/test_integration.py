"""Every installed backend together, through the real CLI.

Each phi3 plugin distribution installed in this environment (an entry point in the ``phi3`` group)
must be usable: listed by ``phi3 list-backends`` with status ``available`` and able to generate on the
CPU. A backend that honestly cannot run here is expected as such, explicitly, in
``PHI3_EXPECTED_BACKENDS`` (the nox ``integration`` session sets it)::

    PHI3_EXPECTED_BACKENDS="openvino,dml,llamacpp,npu=no device"

A bare name means ``available``. When the variable is set, the installed plugins must be exactly the
ones it names; when it is unset, every installed plugin must be ``available``. A broken plugin, or
one missing a dependency that nobody declared missing, fails here with its error.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from typing import Any

import pytest

from phi3.testing.suite import VENDOR_MODULES

AVAILABLE = "available"
RUNNABLE = (AVAILABLE, "no device")
"""Statuses that still generate: a backend without its hardware runs on its CPU override device."""
STATUSES = (AVAILABLE, "no device", "missing dependency")
"""What may be expected; ``broken`` never may."""


def expected_backends(value: str | None) -> dict[str, str] | None:
    """``PHI3_EXPECTED_BACKENDS`` parsed: backend name -> expected status (None when unset)."""
    if value is None:
        return None
    expected = {}
    for item in value.split(","):
        name, _, status = item.strip().partition("=")
        if not name.strip():
            continue
        status = status.strip() or AVAILABLE
        if status not in STATUSES:
            raise ValueError(f"PHI3_EXPECTED_BACKENDS: {name.strip()!r} expected {status!r}: not one of {STATUSES}")
        expected[name.strip()] = status
    return expected


EXPECTED = expected_backends(os.environ.get("PHI3_EXPECTED_BACKENDS"))
INSTALLED = sorted({ep.name for ep in importlib.metadata.entry_points(group="phi3")})
"""Backend names of the installed plugin distributions (entry point name = backend name)."""


def _expected_status(name: str) -> str:
    return (EXPECTED or {}).get(name, AVAILABLE)


def _listed(run_phi3: Any) -> dict[str, dict[str, Any]]:
    done = run_phi3("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    return {b["name"]: b for b in json.loads(done.stdout)["backends"]}


def _cpu_device(backend: dict[str, Any]) -> str:
    for device in backend["devices"] + backend["override_devices"]:
        if device["kind"] == "cpu":
            return str(device["name"])
    raise AssertionError(f"{backend['name']} offers no CPU device: {backend}")


def test_the_installed_plugins_are_the_expected_ones() -> None:
    assert INSTALLED, "no phi3 plugin distribution is installed: the integration session installs every plugin"
    if EXPECTED is not None:
        assert sorted(EXPECTED) == INSTALLED, (
            f"installed phi3 plugins {INSTALLED} != PHI3_EXPECTED_BACKENDS {sorted(EXPECTED)}"
        )


def test_every_installed_plugin_is_listed_and_usable(run_phi3: Any) -> None:
    listed = _listed(run_phi3)
    problems = []
    for name in INSTALLED:
        if name not in listed:
            problems.append(f"{name}: installed but missing from phi3 list-backends")
            continue
        backend, expected = listed[name], _expected_status(name)
        if backend["status"] != expected:
            why = backend["error"] or backend["detail"]
            problems.append(
                f"{name} ({backend['distribution']}): status {backend['status']!r}, expected {expected!r}: {why}"
            )
    assert not problems, "\n".join(problems)


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


@pytest.mark.parametrize("backend", INSTALLED)
def test_generate_through_each_backend_on_cpu(run_phi3: Any, backend: str) -> None:
    info = _listed(run_phi3)[backend]
    expected = _expected_status(backend)
    assert info["status"] == expected, f"{backend}: {info['status']!r}, expected {expected!r}: {info['error']}"
    if expected not in RUNNABLE:  # declared missing in PHI3_EXPECTED_BACKENDS: nothing to run it with
        pytest.skip(f"{backend} is expected {expected!r} here: {info['detail']}")
    # phi3's default precision (int4), or the backend's first where it has no int4 (e.g. the reference backend)
    precision = [] if "int4" in info["precisions"] else ["-p", info["precisions"][0]]
    done = run_phi3(
        "generate",
        "smoke",
        "Hi",
        "-b",
        backend,
        "-d",
        _cpu_device(info),
        *precision,
        "-n",
        "6",
        "--ignore-eos",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backend"] == backend and result["new_tokens"] == 6
    assert result["device"].lower().startswith("cpu")


def test_auto_says_what_it_picked(run_phi3: Any) -> None:
    assert INSTALLED, "no phi3 plugin distribution is installed"
    done = run_phi3("generate", "smoke", "Hi", "-n", "4", "--ignore-eos")
    assert done.returncode == 0, done.stderr
    assert "auto: picked backend" in done.stderr and "tokens/s" in done.stderr
