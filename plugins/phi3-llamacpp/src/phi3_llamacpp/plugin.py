"""The phi3 hooks of the llamacpp backend (entry point ``llamacpp = "phi3_llamacpp.plugin"``).

This module must stay importable without llama_cpp, torch or transformers: ``phi3 list-backends``
imports it for every listing. Each heavy hook imports its module lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3 import hookimpl
from phi3.adapters import LoraAdapter
from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload
from phi3.hookspecs import PLUGIN_API_VERSION
from phi3.types import (
    Artifact,
    BackendInfo,
    BackendStatus,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SamplingControl,
    SessionHandle,
)
from phi3_llamacpp import ARTIFACT_FORMAT, BACKEND_NAME, ENGINE_NAME, probe
from phi3_llamacpp.grammar import enforced_kinds
from phi3_llamacpp.quantize import ARTIFACT_OPTIONS, PRECISIONS
from phi3_llamacpp.session import LOAD_OPTIONS

SAMPLING: tuple[SamplingControl, ...] = ("min_p",)
"""Optional sampling controls applied (llama.cpp's ``llama_sampler_init_min_p``, see generate.py)."""

DESCRIPTION = "llama.cpp (llama-cpp-python): GGUF on the CPU, and on GPUs where the build has Vulkan, Metal or CUDA"


def _detail(install: probe.Installation, devices: list[DeviceInfo]) -> str:
    parts = [f"llama-cpp-python {install.version}: {', '.join(d.name for d in devices)}"]
    if install.gpu_backends:
        parts.append(f"GPU backends built in: {', '.join(install.gpu_backends)}")
    else:
        parts.append(f"CPU-only build (for a GPU: {probe.GPU_BUILD_HINT})")
    if not install.converter_ready:
        parts.append('quantizing needs torch, transformers and sentencepiece: pip install "phi3-llamacpp[convert]"')
    return "; ".join(parts)


@hookimpl
def phi3_backend_info() -> BackendInfo:
    """Cheap: distribution metadata and library file names only (see :mod:`phi3_llamacpp.probe`)."""
    install = probe.installation()
    common: dict[str, Any] = {
        "name": BACKEND_NAME,
        "description": DESCRIPTION,
        "precisions": PRECISIONS,
        "library_versions": install.library_versions,
        "options": (*ARTIFACT_OPTIONS, *LOAD_OPTIONS),
        "api_version": PLUGIN_API_VERSION,
    }
    if not install.ready:
        detail = f"llama-cpp-python is not installed: {probe.PIP_COMMAND}"
        engine = EngineInfo(ENGINE_NAME, "llama.cpp", available=False, detail=detail, artifact_format=ARTIFACT_FORMAT)
        return BackendInfo(
            engines=(engine,), devices=(), status=BackendStatus.MISSING_DEPENDENCY, detail=detail, **common
        )
    devices = probe.cheap_devices(install)
    engine = EngineInfo(ENGINE_NAME, "llama.cpp through llama-cpp-python (GGUF)", artifact_format=ARTIFACT_FORMAT)
    return BackendInfo(
        engines=(engine,),
        devices=tuple(devices),
        status=BackendStatus.AVAILABLE,
        detail=_detail(install, devices),
        structured_output=enforced_kinds(),
        sampling=SAMPLING,
        adapters=True,
        **common,
    )


@hookimpl
def phi3_devices() -> Sequence[DeviceInfo]:
    """The runtime's own answer: the ggml backend registry (imports llama_cpp)."""
    from phi3_llamacpp.devices import runtime_devices

    return [device.info for device in runtime_devices()]


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    from phi3.cache import phi3_home
    from phi3_llamacpp.quantize import quantize

    return quantize(request, output_dir, progress, phi3_home() / "llamacpp-converter")


@hookimpl
def phi3_convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress
) -> Mapping[str, Any]:
    """A GGUF LoRA adapter for this base GGUF (see :mod:`phi3_llamacpp.lora`)."""
    from phi3.cache import phi3_home
    from phi3_llamacpp.lora import convert_adapter

    return convert_adapter(artifact, adapter, output_dir, phi3_home() / "llamacpp-converter", progress)


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    """A :class:`phi3_llamacpp.engine.LlamaEngine`; generate, the chat template and unload are the
    forwarding hooks of :mod:`phi3.engine_hooks` imported above."""
    from phi3_llamacpp.engine import LlamaEngine

    return engine_session(BACKEND_NAME, LlamaEngine(request))


__all__ = [
    "phi3_apply_chat_template",
    "phi3_backend_info",
    "phi3_convert_adapter",
    "phi3_devices",
    "phi3_generate",
    "phi3_load",
    "phi3_quantize",
    "phi3_unload",
]
