"""Is there an Intel NPU here, and which device does a request really run on?

Three answers, from cheap to authoritative:

1. :func:`probe_npus` (for ``phi3 list-backends``; imports nothing): Linux's ``accel`` device nodes
   (``/dev/accel/accel*`` bound to ``intel_vpu``, with the kernel driver's version) through
   :func:`phi3.probing.linux_npus`; on Windows the "Neural processors" device class in the registry
   (driver description and version), read with ``winreg``.
2. :func:`runtime_devices` (for ``phi3 devices``): what the runtimes themselves see: OpenVINO's
   ``available_devices`` (an NPU node without the user-space driver is not a device OpenVINO can
   use) and ``intel_npu_acceleration_library.backend.npu_available()``. The library is asked in a
   child process: importing it loads its own OpenVINO 2024.4 libraries (and torch), which must not
   share a process with the newer OpenVINO that the genai engine uses.
3. :func:`resolve_genai_device` (at load): the device OpenVINO will compile for.

The CPU is never a default: it is an *override* device (``--device CPU``), and then the result
says ``CPU``. phi3 has no silent fallbacks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from phi3.errors import DeviceNotFoundError
from phi3.probing import is_windows, linux_npus, module_available
from phi3.types import DeviceInfo

NPU = "NPU"
CPU = "CPU"
INTEL = "Intel"
NO_NPU = "no NPU device: needs an Intel Core Ultra processor (Meteor Lake or newer) with the Intel NPU driver"
"""The backend's status detail on machines without an NPU (``phi3 list-backends``)."""
NO_NPU_HELP = (
    "an NPU needs an Intel Core Ultra processor and the Intel NPU driver (Linux: the intel_vpu kernel "
    "module and linux-npu-driver's user-space libraries; Windows: the Intel NPU driver); "
    "pass --device CPU to run the NPU engines on the CPU instead"
)
CPU_OVERRIDE = DeviceInfo(
    CPU, "cpu", "the NPU engines run on the CPU instead (no NPU acceleration); only with an explicit --device CPU"
)
WINDOWS_NPU_CLASS = r"SYSTEM\CurrentControlSet\Control\Class\{f01a9d53-3ff6-48d2-9f97-c8a7004be10c}"
"""The "Neural processors" (ComputeAccelerator) device setup class that Intel's NPU driver registers."""
LIBRARY_PROBE_TIMEOUT_S = 180


def _windows_npus() -> list[DeviceInfo]:
    """Intel NPUs from the registry's device class (driver description and version); [] if none."""
    if sys.platform != "win32":  # also tells type checkers where winreg exists
        return []
    import winreg

    found: list[DeviceInfo] = []
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, WINDOWS_NPU_CLASS) as devices:
            index = 0
            while True:
                try:
                    name = winreg.EnumKey(devices, index)
                except OSError:
                    break
                index += 1
                if not name.isdigit():
                    continue
                with winreg.OpenKey(devices, name) as device:
                    values = {}
                    for value in ("DriverDesc", "ProviderName", "DriverVersion"):
                        try:
                            values[value] = str(winreg.QueryValueEx(device, value)[0])
                        except OSError:
                            values[value] = ""
                if INTEL.lower() in (values["DriverDesc"] + values["ProviderName"]).lower():
                    found.append(
                        DeviceInfo(NPU, "npu", values["DriverDesc"] or "Intel NPU", values["DriverVersion"] or None)
                    )
    except OSError:
        return []
    return found[:1]


def probe_npus() -> list[DeviceInfo]:
    """Intel NPUs the operating system shows (cheap: no vendor import)."""
    if is_windows():
        return _windows_npus()
    if not sys.platform.startswith("linux"):
        return []
    npus = [n for n in linux_npus() if n.vendor == INTEL]
    if not npus:
        return []
    return [DeviceInfo(NPU, "npu", f"Intel NPU ({npus[0].node})", npus[0].driver)]


@dataclass(frozen=True)
class LibraryView:
    """What intel-npu-acceleration-library says about this machine."""

    npu_available: bool
    driver_version: str | None = None
    error: str | None = None


_LIBRARY_PROBE = """
import json, warnings
warnings.simplefilter("ignore")
from phi3.vendor_compat import hide_broken_torchvision
hide_broken_torchvision()
from intel_npu_acceleration_library import backend
ok = bool(backend.npu_available())
driver = None
if ok:
    try:
        driver = str(backend.get_driver_version())
    except Exception:
        pass
print("PHI3-NPU-PROBE " + json.dumps({"npu_available": ok, "driver_version": driver}))
"""


@functools.lru_cache(maxsize=1)
def library_view() -> LibraryView | None:
    """Ask the library (in a child process, in a scratch cwd) whether it sees an NPU; None if absent."""
    if not module_available("intel_npu_acceleration_library"):
        return None
    with tempfile.TemporaryDirectory(prefix="phi3-npu-probe-") as scratch:
        try:
            done = subprocess.run(
                [sys.executable, "-c", _LIBRARY_PROBE],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=LIBRARY_PROBE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return LibraryView(False, error=f"the library probe did not finish: {exc}")
    for line in done.stdout.splitlines():
        if line.startswith("PHI3-NPU-PROBE "):
            data = json.loads(line.split(" ", 1)[1])
            return LibraryView(bool(data["npu_available"]), data.get("driver_version"))
    tail = " ".join((done.stderr or "").strip().splitlines()[-1:])[:300]
    return LibraryView(False, error=f"importing intel_npu_acceleration_library failed: {tail or done.returncode}")


def openvino_devices() -> list[str]:
    """OpenVINO's ``available_devices`` (imports openvino, ~0.2 s)."""
    from phi3_openvino.api import available_devices

    return available_devices()


def _openvino_npu() -> DeviceInfo | None:
    if not module_available("openvino"):
        return None
    from phi3_openvino.api import ov_core

    if NPU not in openvino_devices():
        return None
    core = ov_core()
    name, driver = "Intel NPU", None
    with contextlib.suppress(Exception):  # a plugin that lists the device but cannot describe it
        name = str(core.get_property(NPU, "FULL_DEVICE_NAME"))
    with contextlib.suppress(Exception):
        driver = str(core.get_property(NPU, "NPU_DRIVER_VERSION"))
    return DeviceInfo(NPU, "npu", name, driver)


def runtime_devices() -> list[DeviceInfo]:
    """The NPU as the runtimes see it (empty when neither does); the CPU is an override, not listed."""
    openvino = _openvino_npu()
    library = library_view()
    seen_by = []
    if openvino is not None:
        seen_by.append("OpenVINO")
    if library is not None and library.npu_available:
        seen_by.append("intel-npu-acceleration-library")
    if not seen_by:
        return []
    cheap = probe_npus()
    description = (openvino.description if openvino else (cheap[0].description if cheap else "Intel NPU")) + (
        f" (seen by {' and '.join(seen_by)})"
    )
    driver = (
        (openvino.driver_version if openvino else None)
        or (library.driver_version if library else None)
        or (cheap[0].driver_version if cheap else None)
    )
    return [DeviceInfo(NPU, "npu", description, driver)]


def resolve_genai_device(requested: str) -> str:
    """``NPU`` (when OpenVINO really has it) or the ``CPU`` override; anything else is refused."""
    wanted = requested.strip().upper()
    present = openvino_devices()
    if wanted == CPU:
        return CPU
    if wanted == NPU and NPU in present:
        return NPU
    if wanted == NPU:
        node = " (the OS shows an NPU, but OpenVINO cannot open it: is the user-space NPU driver installed?)"
        raise DeviceNotFoundError(
            "OpenVINO sees no NPU here" + (node if probe_npus() else ""),
            hint=f"devices present: {', '.join(present)}; {NO_NPU_HELP}",
        )
    raise DeviceNotFoundError(
        f"device {requested!r} is not a device of the npu backend", hint=f"use {NPU}, or {CPU} as an explicit override"
    )


__all__ = [
    "CPU",
    "CPU_OVERRIDE",
    "NO_NPU",
    "NO_NPU_HELP",
    "NPU",
    "LibraryView",
    "library_view",
    "openvino_devices",
    "probe_npus",
    "resolve_genai_device",
    "runtime_devices",
]
