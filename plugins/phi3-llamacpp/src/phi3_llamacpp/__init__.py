"""phi3-llamacpp: Phi-3 on llama.cpp (through llama-cpp-python), GGUF artifacts.

The hooks live in :mod:`phi3_llamacpp.plugin` (entry point ``llamacpp``). Importing this package
imports no vendor library: ``phi3 list-backends`` loads it for every listing.
"""

from __future__ import annotations

BACKEND_NAME = "llamacpp"
ENGINE_NAME = "llama"
ARTIFACT_FORMAT = "gguf-v1"
"""Bump when the files phi3_quantize writes change shape (a new cache key for every artifact)."""
RUNTIME_DISTRIBUTION = "llama-cpp-python"
RUNTIME_MODULE = "llama_cpp"
GGUF_NAME = "model.gguf"
METADATA_NAME = "phi3-llamacpp.json"

__all__ = [
    "ARTIFACT_FORMAT",
    "BACKEND_NAME",
    "ENGINE_NAME",
    "GGUF_NAME",
    "METADATA_NAME",
    "RUNTIME_DISTRIBUTION",
    "RUNTIME_MODULE",
]
