"""Cheap hardware probes read a fake /dev + /sys tree the way they read the real one."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3.probing import distribution_version, installed_versions, linux_gpus, linux_npus, module_available


def _device(root: Path, dev: str, node: str, sys_class: str, vendor: str, driver: str) -> None:
    (root / "dev" / dev).mkdir(parents=True, exist_ok=True)
    (root / "dev" / dev / node).touch()
    sys_dir = root / "sys" / "class" / sys_class / node / "device"
    sys_dir.mkdir(parents=True)
    (sys_dir / "vendor").write_text(vendor + "\n")
    drivers = root / "sys" / "bus" / "pci" / "drivers" / driver
    drivers.mkdir(parents=True, exist_ok=True)
    (sys_dir / "driver").symlink_to(drivers)


def test_npu_and_gpu_nodes_are_found_with_vendor_and_driver(tmp_path: Path) -> None:
    _device(tmp_path, "accel", "accel0", "accel", "0x8086", "intel_vpu")
    (tmp_path / "sys" / "module" / "intel_vpu").mkdir(parents=True)
    (tmp_path / "sys" / "module" / "intel_vpu" / "version").write_text("1.10.0\n")
    _device(tmp_path, "dri", "renderD128", "drm", "0x1002", "amdgpu")
    npus, gpus = linux_npus(tmp_path), linux_gpus(tmp_path)
    assert [(d.vendor, d.driver) for d in npus] == [("Intel", "1.10.0")]
    assert [(d.vendor, d.driver) for d in gpus] == [("AMD", "amdgpu")]


def test_nothing_present_means_empty_lists(tmp_path: Path) -> None:
    assert linux_npus(tmp_path) == [] and linux_gpus(tmp_path) == []


def test_package_probes_import_nothing() -> None:
    assert module_available("json") and not module_available("phi3_no_such_module")
    with pytest.raises(ValueError):
        module_available("os.path")
    assert distribution_version("phi3-core") is not None
    assert installed_versions("phi3-core", "no-such-dist-xyz").keys() == {"phi3-core"}
