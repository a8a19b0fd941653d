"""``phi3_quantize`` for both engines: the NPU export recipe, and the library's staged checkpoint.

``genai``: OpenVINO IR built by phi3-openvino's exporter (optimum-intel + NNCF + openvino_tokenizers,
:func:`phi3_openvino.api.export_ir`) with the NPU recipe instead of phi3-openvino's CPU/GPU
defaults: int4 **symmetric**, ratio **1.0** (every eligible weight in int4), group size 128 or
per channel; int8 symmetric per channel; fp16 as is. The NPU compiler is built for exactly those
layouts (asymmetric or mixed int4/int8 weights fall back to slow paths or fail to compile).

``npu-library``: intel-npu-acceleration-library quantizes inside ``from_pretrained`` (neural-
compressor RTN, per channel) every time a model is loaded, and its only way to keep the result is
``torch.save`` of the whole compiled module: a pickle that torch >= 2.6 refuses to load
(``weights_only``) and that would run arbitrary code from any artifact folder someone hands you.
So the artifact is the checkpoint itself, staged into phi3's cache (safetensors, configs,
tokenizer), plus ``npu-library.json`` naming the dtype; loading quantizes and compiles it (~1 s for
the tiny model; ~20 s for a 4-layer model with Phi-3-mini's shapes on 2 CPU cores, so minutes for
the 32-layer Phi-3-mini). Slower loads, but safe, and independent of the library's bugs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError, ModelNotFoundError
from phi3.types import Progress, QuantizeRequest
from phi3_npu.options import CHANNEL_WISE, GENAI, LIBRARY, PRECISIONS, resolve_group_size

RECIPE_FILE = "npu-library.json"
LIBRARY_DTYPES = {"int4": "int4", "int8": "int8", "fp16": "float16"}
"""phi3 precision -> the ``intel_npu_acceleration_library`` dtype object's name."""
STAGED_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
"""What ``from_pretrained`` and the tokenizer read; never ``*.bin``/``*.pt`` pickles."""
REMOTE_CODE_PATTERNS = ("*.py",)


def _widths(source: Path) -> tuple[int, int, int | None]:
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        hidden = int(config["hidden_size"])
        intermediate = int(config.get("intermediate_size") or hidden)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"{source / 'config.json'} has no usable hidden_size: {exc}") from None
    context = config.get("max_position_embeddings")
    return hidden, intermediate, int(context) if context else None


def npu_recipe(precision: str, group_size: int | None) -> dict[str, Any]:
    """phi3-openvino's artifact options that spell the NPU recipe for ``precision``."""
    if precision == "int4":
        return {"group_size": group_size if group_size is not None else CHANNEL_WISE, "ratio": 1.0, "sym": True}
    if precision == "int8":
        return {"sym": True}
    if precision == "fp16":
        return {}
    raise ConfigError(
        f"the npu backend cannot build precision {precision!r}", hint=f"use one of {', '.join(PRECISIONS)}"
    )


def check_request(request: QuantizeRequest) -> int | None:
    """Validate engine, precision and options (cheap); return the int4 group size for genai."""
    if request.engine not in (GENAI, LIBRARY):
        raise ConfigError(f"the npu backend has no engine {request.engine!r}", hint=f"engines: {GENAI}, {LIBRARY}")
    if request.precision not in PRECISIONS:
        raise ConfigError(f"the npu backend cannot build precision {request.precision!r}")
    hidden, intermediate, _ = _widths(request.source.path)
    return resolve_group_size(request.engine, request.precision, request.options, (hidden, intermediate))


def build_genai(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """Export with phi3-openvino's exporter and the NPU recipe; return the manifest fields."""
    from phi3_openvino.api import export_ir as openvino_export

    group_size = check_request(request)
    recipe = npu_recipe(request.precision, group_size)
    progress(f"npu: NPU export recipe for {request.precision}: {recipe or 'fp16 weights'}")
    fields = dict(openvino_export(dataclasses.replace(request, options=recipe), output_dir, progress))
    fields["engines"] = [GENAI]
    fields["npu_recipe"] = {"precision": request.precision, **recipe}
    return fields


def _staged_files(source: Path, trust_remote_code: bool) -> list[Path]:
    patterns = STAGED_PATTERNS + (REMOTE_CODE_PATTERNS if trust_remote_code else ())
    files = sorted({p for pattern in patterns for p in source.glob(pattern) if p.is_file()})
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelNotFoundError(
            f"{source} has no *.safetensors weights",
            hint="the npu-library engine stages safetensors checkpoints only (pickled *.bin weights run code on load)",
        )
    return files


def build_library(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """Stage the checkpoint for ``NPUModelForCausalLM.from_pretrained``; return the manifest fields."""
    check_request(request)
    source = request.source.path
    _, _, context = _widths(source)
    files = _staged_files(source, request.trust_remote_code)
    for index, path in enumerate(files):
        progress(f"npu: staging {path.name} for the npu-library engine", index, len(files))
        shutil.copyfile(path, output_dir / path.name)  # follows hub-cache symlinks: the artifact owns its bytes
    recipe = {
        "library": "intel-npu-acceleration-library",
        "dtype": LIBRARY_DTYPES[request.precision],
        "from_pretrained": {"use_cache": True, "attn_implementation": "sdpa", "export": False},
        "trust_remote_code": request.trust_remote_code,
    }
    (output_dir / RECIPE_FILE).write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    progress("npu: staged; the library quantizes when the model is loaded", len(files), len(files))
    return {"context_length": context, "engines": [LIBRARY], "npu_library": recipe}


__all__ = [
    "LIBRARY_DTYPES",
    "RECIPE_FILE",
    "build_genai",
    "build_library",
    "check_request",
    "npu_recipe",
]
