"""The phi3 hooks of the dml backend (entry point ``dml = "phi3_dml.plugin"``) and its cheap probe.

The backend is an engine object (:class:`phi3_dml.engine.DmlEngine`) that ``phi3_load`` returns
through :func:`phi3.engine_hooks.engine_session`; generation, chat templates and unloading are
phi3's forwarding hooks, re-exported below. Options are typed specs (:mod:`phi3_dml.options`) that
phi3 validates before any hook runs.

This module must stay importable without onnxruntime, torch or transformers: ``phi3 list-backends``
imports it for every listing. Each heavy hook imports its module lazily.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3 import hookimpl, probing
from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload  # noqa: F401
from phi3.hookspecs import PLUGIN_API_VERSION
from phi3.types import (
    CONSTRAINT_KINDS,
    Artifact,
    BackendInfo,
    BackendStatus,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SessionHandle,
)

from phi3_dml import ARTIFACT_FORMAT, BACKEND_NAME, ENGINE_NAME, options, probe, providers, targets

if TYPE_CHECKING:
    from phi3.adapters import LoraAdapter

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


def _missing(installation: probe.Installation) -> BackendInfo:
    package = probe.DIRECTML_PACKAGE if probing.is_windows() else probe.CPU_PACKAGE
    detail = f"onnxruntime-genai is not installed: pip install {package}"
    engine = EngineInfo(
        ENGINE_NAME, "model builder + og.Generator", available=False, detail=detail, artifact_format=ARTIFACT_FORMAT
    )
    return BackendInfo(
        name=BACKEND_NAME,
        description=DESCRIPTION,
        engines=(engine,),
        devices=(),
        precisions=targets.PRECISIONS,
        status=BackendStatus.MISSING_DEPENDENCY,
        detail=detail,
        library_versions=installation.library_versions,
        options=options.options(),
        api_version=PLUGIN_API_VERSION,
        adapters=True,
    )


@hookimpl
def phi3_backend_info() -> BackendInfo:
    """Cheap: distribution metadata and device nodes only (see :mod:`phi3_dml.probe`)."""
    installation = probe.installation()
    if installation.runtime is None:
        return _missing(installation)
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
        options=options.options(),
        api_version=PLUGIN_API_VERSION,
        # set_guidance (llguidance) in every runtime phi3-dml supports; a session narrows this to
        # nothing where the installed runtime's guidance does not work (phi3_dml.guidance.enforced)
        structured_output=CONSTRAINT_KINDS,
        # not chat_template_tools: onnxruntime-genai's template engine hands the template tools in a
        # shape of its own ({name, description, parameters}; tool['function'] is null), so a template
        # written for OpenAI's tools fails to render (test_structured.py, strict xfail)
        adapters=True,  # multi-LoRA through og.Adapters on every artifact's model.lora.onnx (phi3_dml.lora)
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
def phi3_convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress
) -> Mapping[str, Any]:
    from phi3_dml.adapters import convert

    return convert(artifact, adapter, output_dir, progress)


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    from phi3_dml.session import load

    engine = load(request)
    # what this session really enforces (nothing where the installed runtime's guidance does not work)
    return dataclasses.replace(engine_session(BACKEND_NAME, engine), structured_output=engine.structured_output)
