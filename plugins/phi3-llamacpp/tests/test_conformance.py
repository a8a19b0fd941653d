"""phi3's conformance suite on llama.cpp's CPU backend, every precision (int4 Q4_0 first)."""

from __future__ import annotations

from phi3.testing.suite import BackendConformanceSuite


class TestLlamaCpp(BackendConformanceSuite):
    """On the checkpoint with a SentencePiece tokenizer.model: llama.cpp's converter's own Phi-3 path.
    (The bf16 test and the family suite use tokenizer.json-only checkpoints: the driver's workaround.)"""

    backend = "llamacpp"
    device = "CPU"
    vendor_modules = ("llama_cpp",)
    tokenizer_model = True
