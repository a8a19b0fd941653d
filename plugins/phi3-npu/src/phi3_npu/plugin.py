"""The phi3 hooks of the NPU backend (entry point ``npu = "phi3_npu.plugin"``).

``phi3 list-backends`` imports this module for every user, so it imports only phi3 and the
pure-Python :mod:`phi3_npu.options` and :mod:`phi3_npu.devices`; OpenVINO, torch, transformers and
intel-npu-acceleration-library are imported inside the hooks that need them (the library only
ever in a worker process).

Two engines, one artifact format each:

``genai`` (default where OpenVINO GenAI is installed, which phi3-npu's dependencies guarantee)
    ``openvino_genai.LLMPipeline`` on device ``NPU``, from an IR exported with the NPU recipe.
``npu-library``
    intel-npu-acceleration-library as the guide uses it (``NPUModelForCausalLM.from_pretrained``
    with ``CompilerConfig(dtype=...)``, generation through transformers), an optional extra.

Without an NPU the backend says so (status ``no device``) and runs only with ``--device CPU``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3 import hookimpl
from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload  # noqa: F401
from phi3.errors import ConfigError
from phi3.probing import installed_versions, is_windows, module_available
from phi3.types import (
    BackendInfo,
    BackendStatus,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SessionHandle,
)
from phi3_npu._version import __version__
from phi3_npu.devices import CPU_OVERRIDE, NO_NPU, probe_npus
from phi3_npu.options import (
    GENAI,
    GENAI_FORMAT,
    GENAI_STRUCTURED_OUTPUT,
    LIBRARY,
    LIBRARY_FORMAT,
    OPTIONS,
    PRECISIONS,
    resolve_load_options,
)

NAME = "npu"
LIBRARIES = ("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "optimum", "nncf", "transformers")
"""Distributions whose versions key the artifact cache (they shape the exported IR)."""
LIBRARY_ENGINE_LIBRARIES = ("intel-npu-acceleration-library", "torch", "transformers")
"""What the library engine's artifacts depend on instead."""
PRIORITY = 10
"""Above phi3-openvino (0): on a machine with an NPU, ``backend="auto"`` picks the backend the guide
recommends for AI PCs."""
GENAI_MODULES = ("phi3_openvino", "openvino", "openvino_genai", "openvino_tokenizers")
LIBRARY_MODULES = ("intel_npu_acceleration_library", "neural_compressor", "torch", "transformers")


def _library_install_hint() -> str:
    if is_windows():
        return 'pip install "phi3-npu[library]"'
    if sys.platform == "darwin":
        return "intel-npu-acceleration-library does not support macOS"
    return (
        'pip install "phi3-npu[library]", then build the library (it publishes no Linux wheel): '
        "python -m phi3_npu.build_library (see the phi3-npu README)"
    )


def _engines() -> tuple[EngineInfo, ...]:
    genai_missing = [m for m in GENAI_MODULES if not module_available(m)]
    library_missing = [m for m in LIBRARY_MODULES if not module_available(m)]
    return (
        EngineInfo(
            GENAI,
            "OpenVINO GenAI LLMPipeline on the NPU (NPU export recipe: int4 sym, ratio 1.0, group 128 or per channel)",
            available=not genai_missing,
            detail=f"missing {', '.join(genai_missing)}: pip install --force-reinstall phi3-npu"
            if genai_missing
            else "",
            artifact_format=GENAI_FORMAT,
            # phi3-openvino's genai engine and its grammar tokenizer (openvino_genai StructuredOutputConfig);
            # a session on a real NPU narrows this to nothing (see genai_engine.GenAIEngine)
            structured_output=GENAI_STRUCTURED_OUTPUT,
        ),
        EngineInfo(
            LIBRARY,
            "intel-npu-acceleration-library (archived) as the guide uses it, generating through transformers",
            available=not library_missing,
            detail=f"missing {', '.join(library_missing)}: {_library_install_hint()}" if library_missing else "",
            artifact_format=LIBRARY_FORMAT,
            # its artifact is a checkpoint copy for the library to quantize at load: OpenVINO's
            # version does not shape it, so an OpenVINO upgrade must not invalidate it
            library_versions={**installed_versions(*LIBRARY_ENGINE_LIBRARIES), "phi3-npu": __version__},
            structured_output=(),  # the library's generate() has no grammar support phi3 enforces
        ),
    )


@hookimpl
def phi3_backend_info() -> BackendInfo:
    """Cheap: package metadata and OS device nodes only (no OpenVINO, torch or library import)."""
    engines = _engines()
    npus = probe_npus()
    if not any(engine.available for engine in engines):
        status = BackendStatus.MISSING_DEPENDENCY
        detail = "; ".join(f"engine {e.name}: {e.detail}" for e in engines)
    elif not npus:
        status = BackendStatus.NO_DEVICE
        detail = NO_NPU
    else:
        status, detail = BackendStatus.AVAILABLE, ""
    versions = {**installed_versions(*LIBRARIES, "phi3-openvino"), "phi3-npu": __version__}
    return BackendInfo(
        name=NAME,
        description="Intel NPU (Core Ultra): OpenVINO GenAI on the NPU, or the Intel NPU Acceleration Library",
        engines=engines,
        devices=tuple(npus),
        precisions=PRECISIONS,
        status=status,
        detail=detail,
        override_devices=(CPU_OVERRIDE,),
        library_versions=versions,
        options=OPTIONS,  # phi3 validates them (types, ranges, engine/precision scope) before any hook runs
        api_version=1,
        priority=PRIORITY,
        chat_template_tools=True,
    )


@hookimpl
def phi3_devices() -> Sequence[DeviceInfo]:
    """The NPU as OpenVINO and the library see it (the library is asked in a child process)."""
    from phi3_npu.devices import runtime_devices

    return runtime_devices()


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """genai: NPU-recipe IR export; npu-library: the staged checkpoint (see :mod:`phi3_npu.export`)."""
    from phi3_npu import export

    if request.engine == LIBRARY:
        return export.build_library(request, output_dir, progress)
    return export.build_genai(request, output_dir, progress)


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    """Open the artifact with the requested engine on ``NPU`` or the explicit ``CPU`` override."""
    settings = resolve_load_options(request.engine, request.options)
    engine: Any
    if request.engine == GENAI:
        from phi3_npu.genai_engine import GenAIEngine

        assert settings is not None
        engine = GenAIEngine(request.artifact, request.device, settings, request.cache_dir)
    elif request.engine == LIBRARY:
        from phi3_npu.library_engine import LibraryEngine

        engine = LibraryEngine(request.artifact, request.device, request.cache_dir)
    else:
        raise ConfigError(f"phi3-npu has no engine {request.engine!r}", hint=f"engines: {GENAI}, {LIBRARY}")
    session = engine_session(NAME, engine)
    enforced = getattr(engine, "structured_output", None)
    return session if enforced is None else dataclasses.replace(session, structured_output=tuple(enforced))
