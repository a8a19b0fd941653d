"""What is installed, from package metadata only (no vendor import): the cheap half of the probe.

``phi3 list-backends`` must stay fast and must not import onnxruntime, so everything here reads
distribution metadata and OS facts through :mod:`phi3.probing`. Which *distribution* provides the
``onnxruntime_genai`` module tells us which execution providers the runtime was built with: the
three builds (CPU, DirectML, CUDA) install the same module under different distribution names.
The runtime's own answer (``og.is_dml_available()`` ...) comes from :mod:`phi3_dml.providers`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from phi3 import probing

RUNTIME_DISTRIBUTIONS = {
    "onnxruntime-genai-directml": "dml",
    "onnxruntime-genai-cuda": "cuda",
    "onnxruntime-genai": "cpu",
}
"""onnxruntime-genai builds and the GPU provider each adds (every build also has the CPU provider)."""

ORT_DISTRIBUTIONS = ("onnxruntime-directml", "onnxruntime-gpu", "onnxruntime")
"""The ONNX Runtime builds the GenAI runtime sits on (the builder's int4 quantizer also lives there)."""

BUILDER_DISTRIBUTIONS = ("onnx", "onnx-ir", "transformers", "torch")
"""What the model builder imports besides onnxruntime-genai; their versions change the artifact
(transformers 5 writes a different tokenizer_config.json than 4.x, for one)."""

BUILDER_MODULES = ("torch", "transformers", "onnx", "onnx_ir")

DIRECTML_PACKAGE = "onnxruntime-genai-directml"
CPU_PACKAGE = "onnxruntime-genai"

DML_REQUIREMENTS = (
    "DirectML needs Windows, a DirectX 12 capable GPU and the onnxruntime-genai-directml package "
    "(pip install onnxruntime-genai-directml, in place of onnxruntime-genai)"
)


@dataclass(frozen=True)
class Installation:
    """The onnxruntime-genai build(s) present, and the versions that key the artifact cache."""

    runtimes: dict[str, str]
    """Installed runtime distributions -> version (normally exactly one)."""
    library_versions: dict[str, str] = field(default_factory=dict)

    @property
    def runtime(self) -> str | None:
        """The runtime distribution in use (the GPU build wins if several are installed)."""
        for name in RUNTIME_DISTRIBUTIONS:
            if name in self.runtimes:
                return name
        return None

    @property
    def runtime_version(self) -> str | None:
        name = self.runtime
        return self.runtimes[name] if name else None

    @property
    def gpu_provider(self) -> str | None:
        """``"dml"``, ``"cuda"`` or None: the GPU provider the installed build was compiled with."""
        name = self.runtime
        provider = RUNTIME_DISTRIBUTIONS.get(name or "")
        return provider if provider in ("dml", "cuda") else None

    @property
    def conflict(self) -> bool:
        """Several builds installed: they overwrite one another's ``onnxruntime_genai`` module."""
        return len(self.runtimes) > 1

    @property
    def builder_ready(self) -> bool:
        return all(probing.module_available(name) for name in BUILDER_MODULES)

    def default_execution_provider(self) -> str:
        """What an artifact is built for when the user does not say: the installed build's GPU
        provider (so a Windows DirectML user gets a DirectML graph), else cpu."""
        return self.gpu_provider or "cpu"


def installation() -> Installation:
    """Read the installed distributions (metadata only)."""
    runtimes = probing.installed_versions(*RUNTIME_DISTRIBUTIONS)
    versions = {**runtimes, **probing.installed_versions(*ORT_DISTRIBUTIONS, *BUILDER_DISTRIBUTIONS)}
    return Installation(runtimes=runtimes, library_versions=dict(sorted(versions.items())))


def nvidia_gpu_present() -> bool:
    """A cheap hint that a CUDA device exists (driver device node on Linux; assumed on Windows)."""
    if probing.is_windows():
        return True
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


__all__ = [
    "BUILDER_DISTRIBUTIONS",
    "BUILDER_MODULES",
    "CPU_PACKAGE",
    "DIRECTML_PACKAGE",
    "DML_REQUIREMENTS",
    "ORT_DISTRIBUTIONS",
    "RUNTIME_DISTRIBUTIONS",
    "Installation",
    "installation",
    "nvidia_gpu_present",
]
