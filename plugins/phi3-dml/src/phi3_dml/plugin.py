"""The phi3 hooks of the dml backend (entry point ``dml = "phi3_dml.plugin"``) and its cheap probe.

This module must stay importable without onnxruntime, torch or transformers: ``phi3 list-backends``
imports it for every listing. Each heavy hook imports its module lazily.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3 import hookimpl, probing
from phi3.generation_config import GenerationConfig
from phi3.hookspecs import PLUGIN_API_VERSION
from phi3.types import (
    CONSTRAINT_KINDS,
    BackendInfo,
    BackendStatus,
    ChatMessage,
    Chunk,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SessionHandle,
)

from phi3_dml import ARTIFACT_FORMAT, BACKEND_NAME, ENGINE_NAME, probe, providers, targets
from phi3_dml.session import LOAD_OPTIONS

DESCRIPTION = "ONNX Runtime GenAI: DirectML GPUs on Windows, the CPU provider elsewhere, CUDA when installed"


def _detail(installation: probe.Installation, devices: list[DeviceInfo]) -> str:
    runtime = installation.runtime
    parts = [f"provider {', '.join(d.name for d in devices)} ({runtime} {installation.runtime_version})"]
    if installation.gpu_provider != "dml" or not probing.is_windows():
        parts.append(f"DirectML absent: {probe.DML_REQUIREMENTS}")
    if installation.conflict:
        parts.append(
            f"several onnxruntime-genai builds are installed ({', '.join(installation.runtimes)}); "
            "they overwrite one another, keep one"
        )
    if not installation.builder_ready:
        parts.append('quantizing needs pip install "phi3-dml[build]"')
    return "; ".join(parts)


@hookimpl
def phi3_backend_info() -> BackendInfo:
    """Cheap: distribution metadata and device nodes only (see :mod:`phi3_dml.probe`)."""
    installation = probe.installation()
    if installation.runtime is None:
        package = probe.DIRECTML_PACKAGE if probing.is_windows() else probe.CPU_PACKAGE
        detail = f"onnxruntime-genai is not installed: pip install {package}"
        return BackendInfo(
            name=BACKEND_NAME,
            description=DESCRIPTION,
            engines=(
                EngineInfo(
                    ENGINE_NAME,
                    "model builder + og.Generator",
                    available=False,
                    detail=detail,
                    artifact_format=ARTIFACT_FORMAT,
                ),
            ),
            devices=(),
            precisions=targets.PRECISIONS,
            status=BackendStatus.MISSING_DEPENDENCY,
            detail=detail,
            library_versions=installation.library_versions,
            artifact_options=targets.ARTIFACT_OPTIONS,
            api_version=PLUGIN_API_VERSION,
        )
    devices = providers.cheap_devices(installation)
    return BackendInfo(
        name=BACKEND_NAME,
        description=DESCRIPTION,
        engines=(
            EngineInfo(ENGINE_NAME, "ONNX Runtime GenAI model builder + og.Generator", artifact_format=ARTIFACT_FORMAT),
        ),
        devices=tuple(devices),
        precisions=targets.PRECISIONS,
        status=BackendStatus.AVAILABLE,
        detail=_detail(installation, devices),
        library_versions=installation.library_versions,
        artifact_options=targets.ARTIFACT_OPTIONS,
        load_options=LOAD_OPTIONS,
        api_version=PLUGIN_API_VERSION,
        # set_guidance (llguidance) in every runtime phi3-dml supports; a session narrows this to
        # nothing where the installed runtime's guidance does not work (phi3_dml.guidance.enforced)
        structured_output=CONSTRAINT_KINDS,
        # not chat_template_tools: onnxruntime-genai's template engine hands the template tools in a
        # shape of its own ({name, description, parameters}; tool['function'] is null), so a template
        # written for OpenAI's tools fails to render (test_structured.py, strict xfail)
    )


@hookimpl
def phi3_devices() -> Sequence[DeviceInfo]:
    """The runtime's own answer (imports onnxruntime_genai)."""
    from phi3_dml.session import import_runtime

    return providers.runtime_devices(import_runtime())


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    from phi3_dml.builder import quantize

    return quantize(request, output_dir, progress)


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    from phi3_dml.session import load

    return load(request)


@hookimpl
def phi3_generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    from phi3_dml.generate import generate

    return generate(session, prompt, config)


@hookimpl
def phi3_apply_chat_template(
    session: SessionHandle, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None
) -> str:
    from phi3_dml.session import apply_chat_template

    return apply_chat_template(session, messages, tools)


@hookimpl
def phi3_unload(session: SessionHandle) -> None:
    from phi3_dml.session import unload

    unload(session)
