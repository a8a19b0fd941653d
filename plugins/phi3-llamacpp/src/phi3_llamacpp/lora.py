"""LoRA adapters on llama.cpp: a peft adapter as a GGUF LoRA, loaded with the model, one active per generation.

Conversion (``phi3_convert_adapter``): phi3-core reads and normalises the peft folder
(:meth:`phi3.adapters.LoraAdapter.weights`: ``W + B @ A`` per Hugging Face module, q/k/v and
gate/up already fused as Phi-3 stores them); each module maps onto the base GGUF's tensor
(``model.layers.N.self_attn.qkv_proj`` -> ``blk.N.attn_qkv.weight`` ...: llama.cpp's Phi-3 converter
keeps the fused layout unpermuted) and :mod:`phi3_llamacpp.lora_driver` writes the GGUF with
llama.cpp's own ``gguf`` package, in float32 whatever the base's precision.

Runtime: every adapter of the model is loaded at ``phi3_load`` (``llama_adapter_lora_init``; llama.cpp
applies it in the graph as ``W x + B (A x)``, the base weights stay untouched and shared). Each
generation sets exactly its adapter at scale 1, or none, with ``llama_set_adapters_lora`` (llama-cpp-python
0.3.36 has no rm/clear call: an empty list clears). The KV cache holds keys and values computed under one
adapter, so a generation whose adapter differs from the one that filled the cache starts from an
empty cache (:func:`activate` reports the change; :mod:`phi3_llamacpp.generate` clears the cache
before every prefill anyway).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3.adapters import LoraAdapter, PreparedAdapter
from phi3.errors import AdapterError
from phi3.types import Artifact, Progress
from phi3_llamacpp import BACKEND_NAME, GGUF_NAME, native_log

LORA_GGUF_NAME = "adapter.gguf"
TENSOR_NAMES = {"qkv_proj": "attn_qkv", "o_proj": "attn_output", "gate_up_proj": "ffn_up", "down_proj": "ffn_down"}
"""Phi-3 module -> llama.cpp tensor of the Phi-3 architecture (gate_up_proj is llama.cpp's fused ffn_up)."""


def gguf_tensor_name(module: str) -> str:
    """``model.layers.3.mlp.gate_up_proj`` -> ``blk.3.ffn_up.weight``."""
    parts = module.split(".")
    if len(parts) != 5 or parts[:2] != ["model", "layers"] or parts[4] not in TENSOR_NAMES:
        raise AdapterError(
            f"LoRA module {module} has no llama.cpp tensor", hint="adapt only " + ", ".join(TENSOR_NAMES)
        )
    return f"blk.{int(parts[2])}.{TENSOR_NAMES[parts[4]]}.weight"


def convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, cache_root: Path, progress: Progress
) -> dict[str, Any]:
    """Write ``adapter.gguf`` for ``artifact`` into ``output_dir`` (see the module doc)."""
    import numpy as np

    from phi3_llamacpp.converter import converter_sources

    sources = converter_sources(cache_root)
    progress(f"writing LoRA adapter {adapter.name!r} as a GGUF adapter (float32)")
    arrays: dict[str, Any] = {}
    for module, (a, b) in adapter.weights().items():
        name = gguf_tensor_name(module)
        arrays[name + ".lora_a"], arrays[name + ".lora_b"] = a, b
    with tempfile.TemporaryDirectory(prefix="phi3-lora-") as scratch:
        npz = Path(scratch) / "weights.npz"
        np.savez(npz, **arrays)
        command = [sys.executable, "-m", "phi3_llamacpp.lora_driver", str(sources), str(artifact.path / GGUF_NAME)]
        command += [str(npz), str(output_dir / LORA_GGUF_NAME)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ}, check=False)
    if done.returncode != 0 or not (output_dir / LORA_GGUF_NAME).is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise AdapterError(
            f"adapter {adapter.name!r} does not fit this GGUF: {lines[-1] if lines else 'no output'}",
            hint="use an adapter trained on this base model",
        ) from RuntimeError(done.stderr[-20000:])
    return {"lora_gguf": LORA_GGUF_NAME, "lora_dtype": "F32", "tensors": len(arrays) // 2, "rank": adapter.rank}


def load_adapters(llama_cpp: Any, llama: Any, adapters: Mapping[str, PreparedAdapter]) -> dict[str, Any]:
    """Every adapter loaded on ``llama``'s model, by name (freed with the model; see llama.h).

    llama.cpp's log lines while loading (e.g. on a repacked Q4_0 base, one warning per tensor that the
    adapter stays in a plain CPU buffer) are kept off the terminal; a failure's message carries the last
    one, when llama.cpp logged any (llama-cpp-python 0.3.36 logs nothing for a truncated file).
    """
    loaded: dict[str, Any] = {}
    for name, prepared in adapters.items():
        if prepared.path is None or not (prepared.path / LORA_GGUF_NAME).is_file():
            raise AdapterError(
                f"adapter {name!r} was not converted for backend {BACKEND_NAME}",
                hint="phi3 cache prune, then load again",
            )
        path = prepared.path / LORA_GGUF_NAME
        with native_log.captured() as log:
            handle = llama_cpp.llama_adapter_lora_init(llama.model, str(path).encode())
            last = native_log.last_line(log())
        if not handle:
            reason = f": {last}" if last else " (a damaged or incomplete file)"
            raise AdapterError(
                f"llama.cpp could not load adapter {name!r} from {path}{reason}",
                hint=f"delete {path.parent}, then load again (phi3 converts the adapter anew)",
            )
        loaded[name] = handle
    return loaded


def activate(llama_cpp: Any, ctx: Any, loaded: Mapping[str, Any], name: str | None) -> None:
    """Exactly ``name``'s adapter at scale 1 on ``ctx`` (None: none). llama.cpp skips an unchanged set."""
    if name is None:
        code = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
    else:
        if name not in loaded:
            raise AdapterError(
                f"no adapter named {name!r} is loaded", hint=f"use one of: {', '.join(loaded) or 'none'}"
            )
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(loaded[name])
        scales = (ctypes.c_float * 1)(1.0)
        code = llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
    if code != 0:
        raise AdapterError(f"llama.cpp could not set adapter {name!r} (code {code})")


__all__ = ["LORA_GGUF_NAME", "TENSOR_NAMES", "activate", "convert_adapter", "gguf_tensor_name", "load_adapters"]
