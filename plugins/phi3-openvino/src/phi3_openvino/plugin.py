"""The phi3 hooks of the OpenVINO backend (entry point ``openvino = "phi3_openvino.plugin"``).

This module is imported by ``phi3 list-backends`` for every user, so it imports only phi3 and the
pure-Python :mod:`phi3_openvino.options`; OpenVINO, optimum, torch and transformers are imported
inside the hooks that need them. The probe answers from package metadata and device nodes
(:mod:`phi3.probing`); ``phi3_devices`` asks the OpenVINO runtime itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3 import hookimpl
from phi3.adapters import WEIGHTS_FILE, LoraAdapter, write_peft_folder
from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload  # noqa: F401
from phi3.errors import AdapterError, ConfigError
from phi3.integrations import transformers_structured
from phi3.probing import installed_versions, is_windows, linux_gpus, linux_npus, module_available
from phi3.types import (
    Artifact,
    BackendInfo,
    BackendStatus,
    ConstraintKind,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SamplingControl,
    SessionHandle,
)
from phi3_openvino._version import __version__
from phi3_openvino.artifact import ARTIFACT_FORMAT
from phi3_openvino.options import (
    DEFAULT_INT4_RECIPE,
    OPTIONS,
    PRECISIONS,
    resolve_max_concurrent,
    resolve_ov_config,
)

NAME = "openvino"
LIBRARIES = ("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "optimum", "nncf", "transformers")
"""Distributions whose versions key the artifact cache: each one shapes the exported bytes."""
INTEL_PCI_VENDOR = "Intel"
GENAI_STRUCTURED_OUTPUT: tuple[ConstraintKind, ...] = ("json_schema", "json_object", "regex")
"""What the genai engine enforces (openvino_genai ``StructuredOutputConfig``; JSON Schemas compiled to
compact-JSON grammars by xgrammar); must equal ``genai_engine.STRUCTURED_OUTPUT``, repeated here so that
listing backends imports no OpenVINO."""
SAMPLING: tuple[SamplingControl, ...] = ("min_p",)
"""Both engines apply ``min_p`` (openvino_genai ``GenerationConfig.min_p``; transformers ``min_p=``)."""


def _genai_structured_output() -> tuple[ConstraintKind, ...]:
    """The JSON kinds need the xgrammar package (it compiles the schema); regex does not."""
    if module_available("xgrammar"):
        return GENAI_STRUCTURED_OUTPUT
    return tuple(kind for kind in GENAI_STRUCTURED_OUTPUT if kind == "regex")


def _engines() -> tuple[EngineInfo, ...]:
    genai_missing = [m for m in ("openvino_genai", "openvino_tokenizers") if not module_available(m)]
    optimum_missing = [m for m in ("optimum", "transformers", "torch") if not module_available(m)]
    return (
        EngineInfo(
            "genai",
            "OpenVINO GenAI LLMPipeline: no torch at run time, prefix caching",
            available=not genai_missing,
            detail=f"missing {', '.join(genai_missing)}: pip install openvino-genai openvino-tokenizers"
            if genai_missing
            else "",
            artifact_format=ARTIFACT_FORMAT,
            structured_output=_genai_structured_output(),
        ),
        EngineInfo(
            "optimum",
            "optimum-intel OVModelForCausalLM with transformers' generate()",
            available=not optimum_missing,
            detail=f"missing {', '.join(optimum_missing)}: pip install optimum-intel" if optimum_missing else "",
            artifact_format=ARTIFACT_FORMAT,
            # a logits processor (llguidance) in transformers' generate(); none without llguidance
            structured_output=transformers_structured.enforced_kinds(),
            # optimum-intel compiles the IR's weights as constants and has no LoRA for OpenVINO models:
            # applying an adapter would mean a merged model per adapter, not a switch per request
            adapters=False,
        ),
    )


def _intel_opencl_icd(root: Path = Path("/")) -> bool:
    """Whether Intel's OpenCL runtime is registered: OpenVINO's GPU plugin cannot load without it."""
    return any((root / "etc" / "OpenCL" / "vendors").glob("intel*.icd"))


def _probe_devices(root: Path = Path("/")) -> tuple[tuple[DeviceInfo, ...], str]:
    """CPU always; Intel GPUs/NPUs from Linux device nodes; plus a note on what was left out.

    A GPU node counts only with Intel's OpenCL ICD registered (otherwise OpenVINO's GPU plugin
    fails with ``libOpenCL.so.1: cannot open shared object file``). ``phi3 devices`` asks the
    runtime itself. On Windows no cheap probe exists: GPU/NPU work when named (``-d GPU``).
    """
    devices = [DeviceInfo("CPU", "cpu", "OpenVINO CPU plugin")]
    if is_windows():
        return tuple(devices), ""
    note = ""
    gpus = [g for g in linux_gpus(root) if g.vendor == INTEL_PCI_VENDOR]
    if gpus and _intel_opencl_icd(root):
        devices.insert(0, DeviceInfo("GPU", "gpu", f"Intel GPU ({gpus[0].node})", gpus[0].driver))
    elif gpus:
        note = "an Intel GPU is present but its OpenCL runtime is not installed (e.g. apt install intel-opencl-icd)"
    npus = [n for n in linux_npus(root) if n.vendor == INTEL_PCI_VENDOR]
    if npus:
        devices.insert(0, DeviceInfo("NPU", "npu", f"Intel NPU ({npus[0].node})", npus[0].driver))
    return tuple(devices), note


@hookimpl
def phi3_backend_info() -> BackendInfo:
    """Cheap: metadata and device nodes only (no OpenVINO import)."""
    engines = _engines()
    # the default int4 recipe keys the cache too: changing it must re-quantize what was built without options
    versions = {
        **installed_versions(*LIBRARIES),
        "phi3-openvino": __version__,
        "phi3-openvino-int4-recipe": DEFAULT_INT4_RECIPE,
    }
    devices, note = _probe_devices()
    status, detail = BackendStatus.AVAILABLE, note
    if not module_available("openvino"):
        status = BackendStatus.MISSING_DEPENDENCY
        detail = "the openvino package is not installed: pip install --force-reinstall phi3-openvino"
    elif not any(engine.available for engine in engines):
        status = BackendStatus.MISSING_DEPENDENCY
        detail = "; ".join(f"engine {e.name}: {e.detail}" for e in engines)
    return BackendInfo(
        name=NAME,
        description="Intel OpenVINO: int4/int8/fp16 via optimum-intel + NNCF, run with OpenVINO GenAI or optimum-intel",
        engines=engines,
        devices=devices,
        precisions=PRECISIONS,
        status=status,
        detail=detail,
        library_versions=versions,
        options=OPTIONS,  # phi3 validates them (types, ranges, precisions) before any hook runs
        api_version=1,
        chat_template_tools=True,
        sampling=SAMPLING,
        adapters=True,  # the genai engine (LLMPipeline and continuous batching); see phi3_convert_adapter
    )


@hookimpl
def phi3_devices() -> Sequence[DeviceInfo]:
    """The runtime's own list (``Core().available_devices`` with FULL_DEVICE_NAME)."""
    from phi3_openvino.devices import runtime_devices

    return runtime_devices()


@hookimpl
def phi3_resolve_device(name: str) -> DeviceInfo | None:
    """Composite names (``AUTO:GPU,CPU``, ``HETERO:GPU,CPU``, ``MULTI:...``) checked part by part."""
    from phi3_openvino.devices import VIRTUAL_PREFIXES, kind_of, resolve

    if name.strip().split(":")[0].upper() not in VIRTUAL_PREFIXES:
        return None
    target = resolve(name)  # raises DeviceNotFoundError naming the missing parts
    return DeviceInfo(name, kind_of(target.partition(":")[2] or target), f"OpenVINO {name} -> {target}")


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """Export + compress with optimum-intel/NNCF; see :mod:`phi3_openvino.export`."""
    from phi3_openvino.export import quantize

    return quantize(request, output_dir, progress)


@hookimpl
def phi3_convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress
) -> Mapping[str, Any]:
    """A canonical peft folder (:func:`phi3.adapters.write_peft_folder`): OpenVINO GenAI's ``Adapter``
    reads its safetensors and matches ``base_model.model.<module>`` to the IR's weights by name, which
    optimum-intel's export keeps (``model.layers.N.self_attn.qkv_proj`` ...), on fp16, int8 and int4
    IRs alike. The folder has peft's scaling folded into B, so every generation applies it with alpha 1;
    q/k/v or gate/up adapters of llama-fied fine-tunes arrive fused for Phi-3's fused projections."""
    progress(f"openvino: writing adapter {adapter.name} for OpenVINO GenAI")
    write_peft_folder(adapter, output_dir)
    return {"format": "peft-safetensors", "file": WEIGHTS_FILE, "alpha": 1.0}


def _adapter_files(request: LoadRequest) -> dict[str, Path]:
    """name -> the safetensors file :func:`phi3_convert_adapter` wrote for it."""
    files: dict[str, Path] = {}
    for name, prepared in request.adapters.items():
        if prepared.path is None:
            raise AdapterError(f"adapter {name!r} was not converted for OpenVINO", hint="load it again")
        files[name] = prepared.path / WEIGHTS_FILE
    return files


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    """Open the artifact with the requested engine on the resolved device."""
    from phi3_openvino.context import session_context

    ov_config = resolve_ov_config(request.options)
    concurrent = resolve_max_concurrent(request.options)
    if request.engine not in ("genai", "optimum"):
        raise ConfigError(f"phi3-openvino has no engine {request.engine!r}", hint="engines: genai, optimum")
    context = session_context(request.artifact, request.options.get("context_length"))
    adapters = _adapter_files(request)
    if adapters and request.engine != "genai":
        raise AdapterError(
            f"the {request.engine} engine of openvino cannot apply LoRA adapters", hint="use -e genai (the default)"
        )
    engine: Any
    if request.engine == "genai" and concurrent > 1:
        from phi3_openvino.batching import BatchingEngine

        engine = BatchingEngine(
            request.artifact,
            request.device,
            ov_config,
            request.cache_dir,
            concurrent,
            context=context,
            adapters=adapters,
        )
    elif request.engine == "genai":
        from phi3_openvino.genai_engine import GenAIEngine

        engine = GenAIEngine(
            request.artifact, request.device, ov_config, request.cache_dir, context=context, adapters=adapters
        )
    elif concurrent > 1:
        raise ConfigError(
            f"max_concurrent_generations={concurrent} needs the genai engine (continuous batching)",
            hint="drop -e optimum, or use max_concurrent_generations=1",
        )
    else:
        from phi3_openvino.optimum_engine import OptimumEngine

        engine = OptimumEngine(request.artifact, request.device, ov_config, request.cache_dir, context=context)
    return session_for(engine)


def session_for(engine: Any) -> SessionHandle:
    """:func:`phi3.engine_hooks.engine_session`, plus what this session really enforces when the
    engine knows better than its declaration (a tokenizer whose grammar table could not be built)."""
    session = engine_session(NAME, engine)
    enforced = getattr(engine, "structured_output", None)
    if enforced is None:
        return session
    return dataclasses.replace(session, structured_output=tuple(enforced))
