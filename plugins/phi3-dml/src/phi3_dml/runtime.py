"""The live ONNX Runtime GenAI objects of one loaded model and the facts about them generation needs.

Kept apart from :mod:`phi3_dml.session` (which opens them) and :mod:`phi3_dml.engine` (which phi3
drives) so the token loop (:mod:`phi3_dml.generate`) depends on the data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass
class Runtime:
    """The live objects and the facts about them that generation needs."""

    og: ModuleType
    model: Any
    tokenizer: Any
    context_length: int | None
    """Tokens one generation may reach (None: unknown, the runtime's own limit)."""
    eos_ids: frozenset[int]
    bos_id: int | None
    add_bos: bool
    chat_template: str | None
    runtime_version: str
    longrope_switch: int | None = None
    """LongRoPE's original_max_position_embeddings, where the graph switches RoPE tables (or None)."""
    detokenizer: Any = None
    """The artifact's tokenizer.json in the ``tokenizers`` library, which output text is decoded with.

    Workaround for onnxruntime-genai 0.18.0: its tokenizer (ort-extensions) drops every character
    after a byte-fallback token that does not complete a UTF-8 sequence ([<0xC7>, "u", <0xF9>, "u"]
    decodes to "\ufffd", not "\ufffdu\ufffdu"), in ``decode`` and in its stream decoder alike.
    ``tests/test_detokenize.py::test_runtime_decoder_still_drops_text_after_an_invalid_byte_upstream``
    turns red when it stops; then decode with the runtime again."""
    adapters: Any = None
    """``og.Adapters`` holding every LoRA adapter the model was loaded with (None: loaded without)."""

    def decode(self, ids: Sequence[int]) -> str:
        if self.detokenizer is not None:
            return str(self.detokenizer.decode(list(ids), skip_special_tokens=True))
        return str(self.tokenizer.decode(list(ids)))

    def encode(self, text: str) -> list[int]:
        ids = [int(i) for i in self.tokenizer.encode(text)]
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids.insert(0, self.bos_id)
        return ids


__all__ = ["Runtime"]
