"""What is installed, from package metadata and files only: the cheap half of the probe.

``phi3 list-backends`` must not import ``llama_cpp`` (loading it maps several shared libraries and
initialises every ggml backend). Which GPU backends the installed llama-cpp-python was *built* with
is visible without importing it: each ggml backend is its own shared library next to the module
(``lib/libggml-vulkan.so``, ``libggml-cuda.so``, ``libggml-metal.dylib`` ...). A GPU device is
reported only when the build has that backend *and* the machine shows the hardware (a DRM render
node for Vulkan, the NVIDIA driver for CUDA, macOS for Metal). The runtime's own answer, from the
ggml backend registry, is :func:`phi3_llamacpp.devices.runtime_devices`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from phi3 import probing
from phi3.types import DeviceInfo
from phi3_llamacpp import RUNTIME_DISTRIBUTION, RUNTIME_MODULE

GPU_BACKENDS = ("vulkan", "cuda", "metal")
"""ggml GPU backends phi3-llamacpp offloads to, in the order ``auto`` prefers them."""

CONVERTER_DISTRIBUTIONS = ("torch", "transformers", "sentencepiece", "numpy")
"""What llama.cpp's convert_hf_to_gguf.py imports; their versions can change the GGUF it writes."""
CONVERTER_MODULES = ("torch", "transformers", "sentencepiece", "numpy", "yaml")

PIP_COMMAND = 'pip install "phi3-llamacpp"'
GPU_BUILD_HINT = (
    'a GPU build of llama-cpp-python: CMAKE_ARGS="-DGGML_VULKAN=on" (AMD/Intel iGPUs), '
    '"-DGGML_CUDA=on" or "-DGGML_METAL=on" pip install --force-reinstall --no-binary llama-cpp-python '
    "llama-cpp-python"
)


@dataclass(frozen=True)
class Installation:
    """The llama-cpp-python build present (metadata and library files only)."""

    version: str | None
    gpu_backends: tuple[str, ...]
    library_versions: dict[str, str]

    @property
    def ready(self) -> bool:
        return self.version is not None and probing.module_available(RUNTIME_MODULE)

    @property
    def converter_ready(self) -> bool:
        return all(probing.module_available(name) for name in CONVERTER_MODULES)


def library_dir() -> Path | None:
    """``llama_cpp/lib`` of the installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(RUNTIME_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        lib = Path(location) / "lib"
        if lib.is_dir():
            return lib
    return None


def built_gpu_backends(lib: Path | None) -> tuple[str, ...]:
    """GPU backends whose ggml library ships with the installed build (``libggml-<name>.*``)."""
    if lib is None:
        return ()
    names = {p.name.lower() for p in lib.iterdir()}
    found = []
    for backend in GPU_BACKENDS:
        if any(n.startswith((f"libggml-{backend}.", f"ggml-{backend}.")) for n in names):
            found.append(backend)
    return tuple(found)


def installation() -> Installation:
    version = probing.distribution_version(RUNTIME_DISTRIBUTION)
    versions = probing.installed_versions(RUNTIME_DISTRIBUTION, *CONVERTER_DISTRIBUTIONS)
    return Installation(version, built_gpu_backends(library_dir()), dict(sorted(versions.items())))


def _hardware_for(backend: str) -> list[str]:
    """Descriptions of the machine's devices that ``backend`` can drive (cheap OS facts)."""
    if backend == "vulkan":
        return [f"{gpu.vendor} GPU ({gpu.node}) through Vulkan" for gpu in probing.linux_gpus()]
    if backend == "cuda":
        present = os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")
        return ["NVIDIA GPU through CUDA"] if present else []
    if backend == "metal":
        return ["Apple GPU through Metal"] if sys.platform == "darwin" else []
    return []


def cheap_devices(install: Installation) -> list[DeviceInfo]:
    """GPU devices the build can use and the machine shows, then the CPU.

    GPU names are ``GPU``, ``GPU.1`` ... in the order the runtime lists them (see
    :mod:`phi3_llamacpp.devices`); the cheap probe can only count the hardware it sees.
    """
    devices: list[DeviceInfo] = []
    for backend in install.gpu_backends:
        for description in _hardware_for(backend):
            name = "GPU" if not devices else f"GPU.{len(devices)}"
            devices.append(DeviceInfo(name, "gpu", description))
    devices.append(DeviceInfo("CPU", "cpu", "llama.cpp CPU backend"))
    return devices


__all__ = [
    "CONVERTER_DISTRIBUTIONS",
    "CONVERTER_MODULES",
    "GPU_BACKENDS",
    "GPU_BUILD_HINT",
    "PIP_COMMAND",
    "Installation",
    "built_gpu_backends",
    "cheap_devices",
    "installation",
    "library_dir",
]
