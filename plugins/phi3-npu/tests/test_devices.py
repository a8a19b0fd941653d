"""Honest devices: no NPU here means "no NPU device", exit 1 without an override, and CPU only when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _npu_common import PROMPT

import phi3
from phi3.probing import PciDevice
from phi3.types import BackendStatus
from phi3_npu import devices, plugin
from phi3_npu.library_engine import LibraryEngine


def test_list_backends_says_there_is_no_npu(run_phi3: Any) -> None:
    done = run_phi3("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    npu = {b["name"]: b for b in json.loads(done.stdout)["backends"]}["npu"]
    assert npu["status"] == "no device"
    assert npu["detail"].startswith("no NPU device")
    assert "Intel Core Ultra" in npu["detail"] and "NPU driver" in npu["detail"]
    assert npu["devices"] == []
    assert [d["name"] for d in npu["override_devices"]] == ["CPU"]
    assert npu["default_engine"] == "genai"
    assert {e["name"]: e["available"] for e in npu["engines"]} == {"genai": True, "npu-library": True}


def test_list_backends_table(run_phi3: Any) -> None:
    done = run_phi3("list-backends")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("npu "))
    assert "no device" in row and "override: CPU" in row
    assert "npu: no NPU device" in done.stdout


def test_devices_asks_openvino_and_the_library(run_phi3: Any) -> None:
    done = run_phi3("devices", "-b", "npu", "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["backends"]
    assert row["devices"] == [], "neither OpenVINO nor the library sees an NPU here"
    assert [d["name"] for d in row["override_devices"]] == ["CPU"]
    view = devices.library_view()
    assert view is not None and view.npu_available is False and view.error is None
    assert "NPU" not in devices.openvino_devices()


@pytest.mark.parametrize("engine", ["genai", "npu-library"])
def test_no_override_is_a_clear_error_and_exit_1(run_phi3: Any, tiny_phi3: Path, engine: str) -> None:
    done = run_phi3("generate", str(tiny_phi3), "Hi", "-b", "npu", "-e", engine)
    assert done.returncode == 1
    assert "no NPU device" in done.stderr
    assert "--device CPU" in done.stderr
    assert "Traceback" not in done.stderr
    assert "quantizing" not in done.stderr, "refused before any work"


def test_no_override_in_python(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.BackendUnavailableError, match="no NPU device") as info:
        phi3.load(tiny_phi3, backend="npu")
    assert info.value.hint and "--device CPU" in info.value.hint


def test_asking_for_the_npu_names_what_is_present(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.DeviceNotFoundError, match="NPU"):
        phi3.load(tiny_phi3, backend="npu", device="NPU", precision="int8")


def test_auto_never_picks_the_npu_backend_without_an_npu() -> None:
    from phi3.plugins import get_registry
    from phi3.selection import select

    picked = select(get_registry(), "auto", "auto", "int8", None)  # openvino on its CPU, here
    assert picked.backend != "npu"
    assert "npu" in picked.reason and "not usable" in picked.reason


def test_result_reports_the_cpu_override(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3("generate", str(tiny_phi3), "Hi", "-b", "npu", "--device", "CPU", "-p", "int8", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["backend"], result["engine"], result["device"]) == ("npu", "genai", "CPU")


def _fake_npu(monkeypatch: pytest.MonkeyPatch) -> None:
    node = PciDevice("/dev/accel/accel0", "Intel", "1.10.0")
    monkeypatch.setattr(devices, "linux_npus", lambda: [node])
    monkeypatch.setattr(devices, "is_windows", lambda: False)


def test_an_npu_node_makes_the_backend_available(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npu(monkeypatch)
    info = plugin.phi3_backend_info()
    assert info.status is BackendStatus.AVAILABLE
    assert [(d.name, d.kind, d.driver_version) for d in info.devices] == [("NPU", "npu", "1.10.0")]
    assert info.priority > 0, "on an AI PC, auto prefers the backend the guide recommends"


def test_a_node_without_the_user_space_driver_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_npu(monkeypatch)
    with pytest.raises(phi3.DeviceNotFoundError, match="user-space NPU driver") as info:
        devices.resolve_genai_device("NPU")
    assert info.value.hint and "devices present: CPU" in info.value.hint


@pytest.mark.usefixtures("library_installed")
def test_the_library_refuses_an_npu_it_does_not_see(tiny_phi3: Path, phi3_home: Path) -> None:
    artifact = phi3.quantize(tiny_phi3, backend="npu", engine="npu-library", precision="int8")
    with pytest.raises(phi3.DeviceNotFoundError, match="intel-npu-acceleration-library sees no NPU"):
        LibraryEngine(artifact, "NPU", phi3_home / "compiled" / "npu")


def test_result_device_is_the_device_that_ran(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="npu", device="cpu", precision="int8") as model:
        assert model.device == "CPU"
        assert model.generate(PROMPT, max_new_tokens=2, ignore_eos=True).device == "CPU"


def test_windows_registry_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Neural processors" device class as Intel's driver registers it (a stand-in winreg)."""
    import sys
    import types

    keys = {
        devices.WINDOWS_NPU_CLASS: ["Properties", "0000"],
        "0000": {
            "DriverDesc": "Intel(R) AI Boost",
            "ProviderName": "Intel Corporation",
            "DriverVersion": "32.0.100.3104",
        },
    }

    class Key:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> Key:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def enum_key(key: Key, index: int) -> str:
        names = keys[key.name]
        if index >= len(names):
            raise OSError("no more keys")
        return str(names[index])

    def query(key: Key, value: str) -> tuple[str, int]:
        return keys[key.name][value], 1  # type: ignore[call-overload,index]

    fake = types.SimpleNamespace(
        HKEY_LOCAL_MACHINE=None,
        OpenKey=lambda parent, name: Key(name),
        EnumKey=enum_key,
        QueryValueEx=query,
    )
    monkeypatch.setitem(sys.modules, "winreg", fake)
    monkeypatch.setattr(sys, "platform", "win32")
    found = devices._windows_npus()
    monkeypatch.undo()
    assert [(d.name, d.kind, d.description, d.driver_version) for d in found] == [
        ("NPU", "npu", "Intel(R) AI Boost", "32.0.100.3104")
    ]
