"""Cheap facts about this machine for ``phi3_backend_info`` implementations.

Listing backends has to stay fast and must not import OpenVINO, onnxruntime or torch (each costs
seconds, and a broken vendor install would break ``phi3 list-backends``). These helpers answer
"is it installed?" and "is the hardware there?" from package metadata and OS device nodes only.
The authoritative answer (the vendor runtime's own device list) comes from ``phi3_devices``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

PCI_VENDORS = {"0x8086": "Intel", "0x1002": "AMD", "0x10de": "NVIDIA", "0x5143": "Qualcomm"}


def distribution_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None; reads metadata, imports nothing."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_available(name: str) -> bool:
    """Whether top-level module ``name`` can be found, without importing it."""
    if "." in name:
        raise ValueError("module_available() takes a top-level module name; a dotted one would import its parent")
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_versions(*names: str) -> dict[str, str]:
    """``{distribution: version}`` for those of ``names`` that are installed."""
    versions = {}
    for name in names:
        version = distribution_version(name)
        if version is not None:
            versions[name] = version
    return versions


@dataclass(frozen=True)
class PciDevice:
    """A display or accelerator device node found under /sys or /dev (Linux)."""

    node: str
    vendor: str
    driver: str | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _device_nodes(root: Path, dev_dir: str, pattern: str, sys_class: str) -> list[tuple[Path, Path, str | None]]:
    """(node, sysfs device dir, bound kernel driver) for device nodes matching ``pattern``."""
    found = []
    for node in sorted((root / "dev" / dev_dir).glob(pattern)):
        sys_dir = root / "sys" / "class" / sys_class / node.name / "device"
        driver_link = sys_dir / "driver"
        found.append((node, sys_dir, driver_link.resolve().name if driver_link.exists() else None))
    return found


def _vendor(sys_dir: Path) -> str:
    vendor = _read(sys_dir / "vendor") or ""
    return PCI_VENDORS.get(vendor, vendor or "unknown")


def linux_npus(root: Path = Path("/")) -> list[PciDevice]:
    """NPUs exposed by the Linux ``accel`` subsystem (Intel's ``intel_vpu`` driver uses it).

    ``driver`` is the driver module's version where the kernel exposes one, else its name.
    """
    devices = []
    for node, sys_dir, driver in _device_nodes(root, "accel", "accel*", "accel"):
        version = _read(root / "sys" / "module" / (driver or "intel_vpu") / "version")
        devices.append(PciDevice(str(node), _vendor(sys_dir), version or driver))
    return devices


def linux_gpus(root: Path = Path("/")) -> list[PciDevice]:
    """GPUs with a DRM render node (what OpenCL, Level Zero and Vulkan runtimes open)."""
    return [
        PciDevice(str(node), _vendor(sys_dir), driver)
        for node, sys_dir, driver in _device_nodes(root, "dri", "renderD*", "drm")
    ]


def is_windows() -> bool:
    return sys.platform == "win32"


__all__ = [
    "PciDevice",
    "distribution_version",
    "installed_versions",
    "is_windows",
    "linux_gpus",
    "linux_npus",
    "module_available",
]
