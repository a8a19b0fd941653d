"""How many tokens a session holds: the ``context_length`` load option, and the memory it needs.

A 128k model (Phi-3-mini-128k, Phi-3.5-mini, Phi-4-mini) supports 131072 tokens, but its KV cache
for all of them does not fit most machines (Phi-3-mini: ~48 GiB in fp16). OpenVINO allocates the
KV cache as a sequence grows, so "supports 128k" used to mean "fails somewhere past what memory
holds". Instead the session holds a context of its own, which phi3 reports
(``SessionHandle.context_length``, ``Model.context_length``) and enforces (a longer prompt is a
``PromptTooLongError`` naming the option; ``max_new_tokens`` is capped, ``finish_reason="length"``):

- default: the model's context, at most :data:`DEFAULT_CONTEXT_LENGTH` tokens (every 4k model
  keeps its whole context; a 128k model gets 8192);
- ``-O context_length=N`` sets it (at most the model's context), ``-O context_length=max`` asks for
  the model's whole context;
- a context whose KV cache (estimated at fp16, the largest the CPU/GPU plugins store) does not fit
  in the memory available now is refused at load with a ``ConfigError`` naming both sizes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError
from phi3.types import Artifact
from phi3_openvino.artifact import context_length, read_json
from phi3_openvino.options import checked

DEFAULT_CONTEXT_LENGTH = 8192
KV_BYTES_PER_VALUE = 2
"""fp16: OpenVINO's CPU plugin stores the KV cache in u8 or f16 (bf16/f16 on GPU); the estimate takes the larger."""
GIB = 1024**3


def kv_bytes_per_token(config: dict[str, Any]) -> int | None:
    """Bytes of K and V one token occupies across all layers, from config.json (None if unknown)."""
    try:
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        layers = int(config["num_hidden_layers"])
    except (KeyError, TypeError, ValueError):
        return None
    return 2 * layers * kv_heads * head_dim * KV_BYTES_PER_VALUE


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _requested(value: Any, model: int | None) -> int | None:
    """The context asked for: ``value`` is the ``context_length`` option (checked by phi3-core
    against its spec: a whole number >= 2 or "max") or None for the default."""
    if value is None:
        return min(model, DEFAULT_CONTEXT_LENGTH) if model else None
    value = checked({"context_length": value})["context_length"]
    if value == "max":
        return model
    if model and value > model:
        raise ConfigError(
            f"context_length {value} is more than the model supports ({model} tokens)",
            hint=f"use at most {model}, or context_length=max",
        )
    return int(value)


def session_context(artifact: Artifact, value: Any, available: int | None = None) -> int | None:
    """The context this session holds for the ``context_length`` option ``value`` (None: the default).

    Raises:
        ConfigError: a bad value, more than the model supports, or a KV cache that does not fit in
            the memory available now.
    """
    model = context_length(artifact)
    context = _requested(value, model)
    per_token = kv_bytes_per_token(read_json(artifact.path / "config.json"))
    free = available if available is not None else available_memory()
    if context and per_token and free is not None and context * per_token > free:
        need = context * per_token
        fits = free // per_token
        raise ConfigError(
            f"a {context}-token context needs about {need / GIB:.1f} GiB of KV cache "
            f"({per_token / 1024:.0f} KiB per token at fp16), but only {free / GIB:.1f} GiB of memory is available",
            hint=f"load with a smaller -O context_length (about {fits} tokens fit now), or free memory",
        )
    return context


__all__ = ["DEFAULT_CONTEXT_LENGTH", "available_memory", "kv_bytes_per_token", "session_context"]
