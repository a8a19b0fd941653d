"""Token ids to text pieces while decoding, for backends whose runtime streams ids, not text.

Used by phi3-openvino (its engines report ids through a callback) and phi3-dml (ONNX Runtime GenAI's
own stream decoder loses text after an invalid byte sequence; see phi3_dml.generate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalDecoder:
    """Decode a growing list of token ids into text deltas, in O(1) tokens per step.

    Decoding the whole output each step is quadratic, and decoding each token alone loses the
    spaces SentencePiece-style decoders strip at the start of a text. So, like vLLM, decode a small
    window twice: ``ids[prefix:read]`` (already shown) and ``ids[prefix:]`` and emit the difference;
    both start at the same token, so both lose the same leading space.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, ids: Sequence[int]) -> str:
        """Add ``ids``; return the new text that is now certain (may be empty)."""
        self._ids.extend(ids)
        shown = self._decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(shown) or text.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(shown) :]

    def flush(self) -> str:
        """Whatever is still held back (e.g. an incomplete character at the very end)."""
        if self._read >= len(self._ids):
            return ""
        shown = self._decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        text = self._decode(self._ids[self._prefix :])
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(shown) :]


__all__ = ["IncrementalDecoder"]
