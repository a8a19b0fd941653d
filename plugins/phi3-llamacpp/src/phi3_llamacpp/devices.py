"""The runtime's own device list: the ggml backend registry of the loaded llama.cpp.

Imports ``llama_cpp`` (``phi3 devices`` and ``phi3_load`` may be slow; the listing probe is in
:mod:`phi3_llamacpp.probe`). llama-cpp-python does not wrap the registry calls, so they are bound
here with ctypes on the same ``libggml`` it loaded (``ggml-backend.h``: ``ggml_backend_dev_count``,
``_get``, ``_name``, ``_description``, ``_type``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from phi3.errors import DeviceNotFoundError
from phi3.types import DeviceInfo

DEV_TYPE_CPU, DEV_TYPE_GPU, DEV_TYPE_IGPU, DEV_TYPE_ACCEL = 0, 1, 2, 3
"""``enum ggml_backend_dev_type`` (ggml-backend.h, llama-cpp-python 0.3.36)."""


@dataclass(frozen=True)
class RuntimeDevice:
    """One ggml device: ``index`` is its position among the GPUs (``main_gpu``), -1 for the CPU."""

    info: DeviceInfo
    ggml_name: str
    index: int


def import_runtime() -> Any:
    """``import llama_cpp`` with a phi3 error naming the fix when it is missing or broken."""
    try:
        import llama_cpp
    except ImportError as exc:
        from phi3.errors import BackendUnavailableError

        raise BackendUnavailableError(
            f"llama-cpp-python cannot be imported: {exc}", hint='pip install "phi3-llamacpp"'
        ) from exc
    return llama_cpp


def _registry() -> Any:
    import llama_cpp._ggml as ggml  # the libggml llama_cpp itself loaded

    lib = ggml.libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    return lib


def runtime_devices() -> list[RuntimeDevice]:
    """GPUs the loaded build really registered (``GPU``, ``GPU.1`` ...), then the CPU."""
    llama_cpp = import_runtime()
    llama_cpp.llama_backend_init()
    found: list[RuntimeDevice] = []
    gpus = 0
    if llama_cpp.llama_supports_gpu_offload():
        lib = _registry()
        for i in range(lib.ggml_backend_dev_count()):
            dev = lib.ggml_backend_dev_get(i)
            if lib.ggml_backend_dev_type(dev) not in (DEV_TYPE_GPU, DEV_TYPE_IGPU):
                continue
            ggml_name = (lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace")
            description = (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace")
            name = "GPU" if gpus == 0 else f"GPU.{gpus}"
            found.append(RuntimeDevice(DeviceInfo(name, "gpu", f"{description} ({ggml_name})"), ggml_name, gpus))
            gpus += 1
    found.append(RuntimeDevice(DeviceInfo("CPU", "cpu", "llama.cpp CPU backend"), "CPU", -1))
    return found


def resolve(name: str) -> RuntimeDevice:
    """The device called ``name`` (case-insensitive; ``GPU.0`` = ``GPU``), or DeviceNotFoundError."""
    wanted = name.strip().upper()
    if wanted == "GPU.0":
        wanted = "GPU"
    devices = runtime_devices()
    for device in devices:
        if device.info.name.upper() == wanted:
            return device
    present = ", ".join(d.info.name for d in devices)
    hint = f"devices present: {present}"
    if wanted.startswith("GPU") and len(devices) == 1:
        from phi3_llamacpp.probe import GPU_BUILD_HINT

        hint += f"; this llama-cpp-python build has no GPU backend; for one, install {GPU_BUILD_HINT}"
    raise DeviceNotFoundError(f"device {name!r} is not available to llama.cpp", hint=hint)


__all__ = ["RuntimeDevice", "import_runtime", "resolve", "runtime_devices"]
