"""Which OpenVINO devices exist here, and what a requested device name really means.

The cheap probe in :mod:`phi3_openvino.plugin` guesses devices from OS device nodes; this module
asks the runtime (``openvino.Core().available_devices``), which is the truth: a GPU render node
without Intel's OpenCL/Level Zero runtime, or an NPU without its driver, is not a device OpenVINO
can use. It backs the ``phi3_devices`` hook and the device check in ``phi3_load``.

``AUTO`` is resolved here, once, with OpenVINO AUTO's own default priority (discrete GPU, then
integrated GPU, then CPU; the NPU only when named, as in ``AUTO:NPU,CPU``), so that a result can
name the device that really ran instead of "AUTO". The price is AUTO's CPU-accelerated first
inference while a GPU compiles, which matters little next to the compiled-model cache.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from phi3.errors import DeviceNotFoundError
from phi3.types import DeviceInfo, DeviceKind

if TYPE_CHECKING:
    import openvino as ov

VIRTUAL_PREFIXES = ("AUTO", "HETERO", "MULTI", "BATCH")


@functools.lru_cache(maxsize=1)
def ov_core() -> ov.Core:
    """One ``openvino.Core`` per process: it loads device plugins lazily and caches them."""
    import openvino as ov

    return ov.Core()


def kind_of(name: str) -> DeviceKind:
    """``GPU.1`` -> ``gpu``; anything OpenVINO adds later counts as a CPU-class device."""
    base = name.split(".")[0].split(":")[0].upper()
    if base == "NPU":
        return "npu"
    if base == "GPU":
        return "gpu"
    return "cpu"


def available() -> list[str]:
    """``Core().available_devices``: only devices whose plugin and driver really load."""
    return list(ov_core().available_devices)


def _full_name(device: str) -> str:
    try:
        return str(ov_core().get_property(device, "FULL_DEVICE_NAME"))
    except Exception:  # a plugin that lists a device but cannot describe it
        return ""


def _driver(device: str) -> str | None:
    if kind_of(device) == "cpu":
        return None
    for prop in ("GPU_DRIVER_VERSION", "NPU_DRIVER_VERSION", "DRIVER_VERSION"):
        try:
            return str(ov_core().get_property(device, prop))
        except Exception:
            continue
    return None


def _is_discrete(device: str) -> bool:
    try:
        return str(ov_core().get_property(device, "DEVICE_TYPE")).upper().endswith("DISCRETE")
    except Exception:
        return False


def runtime_devices() -> list[DeviceInfo]:
    """Every device the runtime reports, plus ``GPU`` (= ``GPU.0``) and ``AUTO`` as users type them."""
    names = available()
    devices = [DeviceInfo(name, kind_of(name), _full_name(name), _driver(name)) for name in names]
    if "GPU" not in names and "GPU.0" in names:
        devices.append(DeviceInfo("GPU", "gpu", f"alias of GPU.0 ({_full_name('GPU.0')})"))
    auto = resolve_auto("AUTO", names)
    devices.append(DeviceInfo("AUTO", kind_of(auto), f"OpenVINO AUTO: picks {auto} here"))
    return devices


def _canonical(requested: str, names: list[str]) -> str | None:
    """The runtime's spelling of ``requested`` (case-insensitive; GPU and GPU.0 are aliases)."""
    wanted = requested.strip().upper()
    for name in names:
        if name.upper() == wanted:
            return name
    if wanted == "GPU" and "GPU.0" in names:
        return "GPU"
    if wanted == "GPU.0" and "GPU" in names:
        return "GPU.0"
    return None


def resolve_auto(requested: str, names: list[str]) -> str:
    """The concrete device AUTO (or ``AUTO:A,B``) would use among ``names``."""
    _, _, listed = requested.partition(":")
    if listed:
        candidates = [part.strip() for part in listed.split(",") if part.strip()]
    else:
        gpus = sorted((n for n in names if kind_of(n) == "gpu"), key=lambda n: (not _is_discrete(n), n))
        candidates = [*gpus, "CPU"]
    for candidate in candidates:
        found = _canonical(candidate, names)
        if found is not None:
            return found
    raise DeviceNotFoundError(
        f"none of the devices AUTO may use ({', '.join(candidates)}) is present",
        hint=f"devices present: {', '.join(names) or 'none'}",
    )


def resolve(requested: str) -> str:
    """Map the user's device to the one OpenVINO will compile for, or raise DeviceNotFoundError.

    ``AUTO``/``AUTO:...`` become a concrete device; ``HETERO:``/``MULTI:`` lists are checked part
    by part and passed on as written; anything else must be in ``available_devices``.
    """
    names = available()
    present = f"devices present: {', '.join([*names, 'AUTO'])}"
    base = requested.strip().split(":")[0].upper()
    if base == "AUTO":
        return resolve_auto(requested.strip(), names)
    if base in VIRTUAL_PREFIXES:
        parts = [p.strip() for p in requested.partition(":")[2].split(",") if p.strip()]
        missing = [p for p in parts if _canonical(p, names) is None]
        if not parts or missing:
            raise DeviceNotFoundError(
                f"device {requested!r} names devices that are not present: {', '.join(missing) or '(none listed)'}",
                hint=present,
            )
        return f"{base}:{','.join(_canonical(p, names) or p for p in parts)}"
    found = _canonical(requested, names)
    if found is None:
        raise DeviceNotFoundError(f"device {requested!r} is not available to OpenVINO here", hint=present)
    return found


__all__ = ["available", "kind_of", "ov_core", "resolve", "resolve_auto", "runtime_devices"]
