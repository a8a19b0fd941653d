"""Plugins are isolated: a broken one is listed with its error and never breaks phi3."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3 import BackendInfo, BackendStatus, DeviceInfo, EngineInfo, hookimpl, plugins


def _run_with(broken: Path, run_phi3: Any, *args: str, **env: str) -> Any:
    path = os.pathsep.join([str(broken), os.environ.get("PYTHONPATH", "")])
    return run_phi3(*args, env={"PYTHONPATH": path, **env})


def test_broken_third_party_plugins_are_listed_with_their_errors(broken_plugins_path: Path, run_phi3: Any) -> None:
    done = _run_with(broken_plugins_path, run_phi3, "list-backends", "--json")
    assert done.returncode == 0, done.stderr
    listed = {b["name"]: b for b in json.loads(done.stdout)["backends"]}
    expected_errors = {
        "import_fails": "No module named 'phi3_broken_example_no_such_vendor_library'",
        "probe_raises": "RuntimeError: device query exploded",
        "missing_hooks": "unknown hook(s) phi3_lod",
        "future_api": "plugin API 99",
    }
    for name, fragment in expected_errors.items():
        assert listed[name]["status"] == "broken", listed[name]
        assert listed[name]["distribution"] == "phi3-broken-example"
        assert fragment in listed[name]["error"]
    assert listed["load_raises"]["status"] == "available"

    table = _run_with(broken_plugins_path, run_phi3, "list-backends")
    assert table.returncode == 0 and "import_fails: import failed: ModuleNotFoundError" in table.stdout


def test_a_raw_exception_in_a_hook_is_one_line_naming_the_backend(
    broken_plugins_path: Path, run_phi3: Any, tiny_phi3: Path
) -> None:
    done = _run_with(broken_plugins_path, run_phi3, "generate", str(tiny_phi3), "hi", "-b", "load_raises")
    assert done.returncode == 1
    assert "Error: backend 'load_raises' failed in phi3_load: ZeroDivisionError" in done.stderr
    assert "Traceback" not in done.stderr
    debug = _run_with(broken_plugins_path, run_phi3, "--debug", "generate", str(tiny_phi3), "hi", "-b", "load_raises")
    assert "Traceback" in debug.stderr and debug.returncode == 1


def test_using_a_broken_backend_is_a_clear_error(broken_plugins_path: Path, run_phi3: Any) -> None:
    done = _run_with(broken_plugins_path, run_phi3, "generate", "smoke", "hi", "-b", "import_fails")
    assert done.returncode == 1
    assert "backend import_fails is broken" in done.stderr and "Traceback" not in done.stderr


def test_allow_and_block_lists(broken_plugins_path: Path, run_phi3: Any) -> None:
    only = _run_with(broken_plugins_path, run_phi3, "list-backends", "--json", PHI3_LOAD_PLUGINS="load_raises")
    assert [b["name"] for b in json.loads(only.stdout)["backends"]] == ["load_raises"]
    blocked = _run_with(
        broken_plugins_path, run_phi3, "list-backends", "--json", PHI3_DISABLE_PLUGINS="import_fails,probe_raises"
    )
    data = json.loads(blocked.stdout)
    assert not {"import_fails", "probe_raises"} & {b["name"] for b in data["backends"]}
    assert sorted(data["disabled"]) == ["import_fails", "probe_raises"]
    none = _run_with(broken_plugins_path, run_phi3, "list-backends", PHI3_LOAD_PLUGINS="")
    assert none.returncode == 0 and "pip install phi3-openvino" in none.stdout


class _NpuOnly:
    """A plugin object (not a vendor stand-in) used to check auto-selection ranking."""

    def __init__(
        self, name: str, devices: tuple[DeviceInfo, ...], status: BackendStatus, overrides: tuple[DeviceInfo, ...] = ()
    ) -> None:
        self.name, self.devices, self.status, self.overrides = name, devices, status, overrides

    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        return BackendInfo(
            self.name,
            "ranking test",
            (EngineInfo("e", artifact_format="x"),),
            self.devices,
            ("fp32",),
            self.status,
            detail="no NPU device (needs an Intel Core Ultra)",
            override_devices=self.overrides,
        )

    @hookimpl
    def phi3_quantize(self, request: Any, output_dir: Path, progress: Any) -> dict[str, Any]:
        raise AssertionError("selection tests never quantize")

    @hookimpl
    def phi3_load(self, request: Any) -> Any:
        raise AssertionError("selection tests never load")

    @hookimpl
    def phi3_generate(self, session: Any, prompt: str, config: Any) -> Any:
        raise AssertionError

    @hookimpl
    def phi3_apply_chat_template(self, session: Any, messages: Any) -> str:
        raise AssertionError


def test_auto_ranks_npu_over_gpu_over_cpu_and_skips_unavailable() -> None:
    from phi3.selection import select

    registry = plugins.get_registry()
    registry.register(
        _NpuOnly("gpu_one", (DeviceInfo("GPU.0", "gpu"), DeviceInfo("CPU", "cpu")), BackendStatus.AVAILABLE), "gpu_one"
    )
    registry.register(_NpuOnly("npu_absent", (), BackendStatus.NO_DEVICE, (DeviceInfo("CPU", "cpu"),)), "npu_absent")
    chosen = select(registry, "auto", "auto", "fp32", None)
    assert (chosen.backend, chosen.device) == ("gpu_one", "GPU.0")
    assert "also usable: reference (cpu)" in chosen.reason and "npu_absent" in chosen.reason

    registry.register(_NpuOnly("npu_here", (DeviceInfo("NPU", "npu"),), BackendStatus.AVAILABLE), "npu_here")
    assert select(registry, "auto", "auto", "fp32", None).backend == "npu_here"


def test_no_silent_fallback_but_an_explicit_override_works() -> None:
    from phi3.selection import select

    registry = plugins.get_registry()
    registry.register(_NpuOnly("npu_absent", (), BackendStatus.NO_DEVICE, (DeviceInfo("CPU", "cpu"),)), "npu_absent")
    with pytest.raises(phi3.BackendUnavailableError) as info:
        select(registry, "npu_absent", "auto", "fp32", None)
    assert "no NPU device" in str(info.value) and "--device CPU" in str(info.value)
    chosen = select(registry, "npu_absent", "cpu", "fp32", None)
    assert chosen.device == "CPU" and "explicit override" in chosen.reason


def test_plugin_returning_the_wrong_type_is_broken_not_fatal() -> None:
    class WrongType(_NpuOnly):
        @hookimpl
        def phi3_backend_info(self) -> Any:  # type: ignore[override]
            return {"name": "dict instead of BackendInfo"}

    registry = plugins.get_registry()
    registry.register(WrongType("wrong", (), BackendStatus.AVAILABLE), "wrong")
    entry = registry.entry("wrong")
    assert entry.status is BackendStatus.BROKEN and "not phi3.BackendInfo" in (entry.error or "")
    assert registry.entry("reference").status is BackendStatus.AVAILABLE


def test_composite_device_names_go_to_the_backend() -> None:
    from phi3.selection import select

    class Composite(_NpuOnly):
        @hookimpl
        def phi3_resolve_device(self, name: str) -> DeviceInfo | None:
            return DeviceInfo(name, "gpu", "composite") if name.startswith("AUTO:") else None

    registry = plugins.get_registry()
    registry.register(Composite("composite", (DeviceInfo("CPU", "cpu"),), BackendStatus.AVAILABLE), "composite")
    assert select(registry, "composite", "AUTO:GPU,CPU", "fp32", None).device == "AUTO:GPU,CPU"
    with pytest.raises(phi3.DeviceNotFoundError, match="TPU"):
        select(registry, "composite", "TPU", "fp32", None)
