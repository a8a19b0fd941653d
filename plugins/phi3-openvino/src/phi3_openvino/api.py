"""phi3-openvino's public API for other phi3 distributions (phi3-npu builds on it).

What a distribution may use of phi3-openvino is listed here, typed and documented; every other
module of the package is private and may change in any release. phi3-npu's genai engine runs
OpenVINO GenAI on the NPU with this exporter, engine and streaming, changing only what differs on
the NPU. Names are imported lazily (PEP 562), so ``import phi3_openvino.api`` loads no vendor
library until a name is used.

Exporting
    :func:`export_ir` ``(request, output_dir, progress) -> manifest fields``: Hugging Face checkpoint
    -> OpenVINO IR (model, tokenizer, detokenizer) with optimum-intel/NNCF, ``request.options``
    being phi3-openvino's artifact options (``group_size``, ``ratio``, ``sym``, ...).
Running
    :class:`GenAIEngine` ``(artifact, device, ov_config, cache_dir, *, context=None, policy=None)``: the
    LLMPipeline engine (``context``: tokens the session holds, default the model's). What differs per
    device is a ``policy`` (phi3_openvino.genai_engine's ``DevicePolicy`` protocol, default
    ``OpenVINOPolicy``): ``resolve_device(device)``, ``compile_properties(device, ov_config, cache_dir)``,
    ``structured_output(device, kinds)`` and ``token_budget(prompt_tokens, requested, model_context)``;
    no underscore method is part of the contract. ``encode(prompt)`` gives genai ``TokenizedInputs``
    (never truncated); ``structured_output`` (attribute): what the session enforces, for
    ``SessionHandle.structured_output``; ``apply_chat_template(messages, tools=None)`` passes
    ``tools`` to a template that reads them.
    :func:`context_length` ``(artifact) -> int | None``: the exported model's context.
    :func:`resolve_ov_config` ``(options) -> dict``: the user's ``ov_config`` option, checked.
    :data:`DEFAULT_OV_CONFIG`: the compile properties phi3-openvino adds to every session (plus its
    ``CACHE_DIR``); :func:`compile_defaults` ``(device_kind, precision) -> dict``: those plus the ones it
    adds for that device kind and artifact precision (``INFERENCE_PRECISION_HINT=f32`` for int4/int8 on
    the CPU), for a caller that compiles the same artifact outside phi3.
Quality
    :func:`ir_logprobs` ``(folder, input_ids) -> [len, vocab] log-probabilities``: one teacher-forced
    forward of an exported IR through optimum-intel, f32 on the CPU (GenAI returns no logits).
Devices
    :func:`available_devices` ``() -> list[str]``: OpenVINO's device names; :func:`ov_core`: the
    process's ``openvino.Core``.
Deprecated (removed in the next release)
    ``longrope_switch``, ``sampling_seed`` and ``to_transformers`` are not OpenVINO's: they live in
    :mod:`phi3.integrations.transformers_generation` (phi3-core). Reading them here still works and
    returns the same functions, with a ``DeprecationWarning`` that names the new import. (Token ids
    -> text pieces: ``phi3.integrations.detokenize.IncrementalDecoder``.)
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phi3_openvino.artifact import context_length
    from phi3_openvino.config_mapping import DEFAULT_OV_CONFIG, compile_defaults
    from phi3_openvino.devices import available as available_devices
    from phi3_openvino.devices import ov_core
    from phi3_openvino.export import quantize as export_ir
    from phi3_openvino.genai_engine import GenAIEngine
    from phi3_openvino.ir_logprobs import ir_logprobs
    from phi3_openvino.options import resolve_ov_config

_EXPORTS: dict[str, tuple[str, str]] = {
    "DEFAULT_OV_CONFIG": ("phi3_openvino.config_mapping", "DEFAULT_OV_CONFIG"),
    "GenAIEngine": ("phi3_openvino.genai_engine", "GenAIEngine"),
    "compile_defaults": ("phi3_openvino.config_mapping", "compile_defaults"),
    "available_devices": ("phi3_openvino.devices", "available"),
    "context_length": ("phi3_openvino.artifact", "context_length"),
    "export_ir": ("phi3_openvino.export", "quantize"),
    "ir_logprobs": ("phi3_openvino.ir_logprobs", "ir_logprobs"),
    "ov_core": ("phi3_openvino.devices", "ov_core"),
    "resolve_ov_config": ("phi3_openvino.options", "resolve_ov_config"),
}

__all__ = [
    "DEFAULT_OV_CONFIG",
    "GenAIEngine",
    "available_devices",
    "compile_defaults",
    "context_length",
    "export_ir",
    "ir_logprobs",
    "ov_core",
    "resolve_ov_config",
]
assert sorted(__all__) == sorted(_EXPORTS), "every public name has one lazy import"

_MOVED = "phi3.integrations.transformers_generation"
_DEPRECATED: dict[str, str] = {name: _MOVED for name in ("longrope_switch", "sampling_seed", "to_transformers")}
"""Names that moved to phi3-core (new module), kept here as aliases for one release (0.x)."""


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        module = _DEPRECATED[name]
        warnings.warn(
            f"phi3_openvino.api.{name} is deprecated and will be removed in the next release; "
            f"use 'from {module} import {name}' (phi3-core)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"phi3_openvino.api has no {name!r} (public names: {', '.join(__all__)})") from None
    return getattr(importlib.import_module(module), attribute)
