"""The benchmark prompt: exactly N tokens of plain text, counted with the model's own tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError

FILLER = (
    "Memory bandwidth often limits how fast a language model can generate new tokens on a laptop, "
    "because every weight is read once for every token. Quantization stores the weights with fewer "
    "bits, so less memory is read and decoding gets faster, at a small cost in accuracy. Neural "
    "processing units and integrated graphics share the same memory as the processor, which is why "
    "the size of the model matters as much as the speed of the chip. The quick brown fox jumps over "
    "the lazy dog while the farmer watches from the porch, and the weather today is sunny with a "
    "light breeze. Students learn mathematics, history, science, music and several languages. "
)
"""Plain text the benchmark prompt is cut from (repeated as needed)."""


# -- the prompt -------------------------------------------------------------------------------


def _tokenizer_functions(folder: Path) -> tuple[Callable[[str, bool], list[int]], Callable[[Sequence[int]], str]]:
    """encode(text, add_special_tokens) and decode(ids) of the checkpoint's own tokenizer."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:
            pass
        else:
            tok: Any = Tokenizer.from_file(str(tokenizer_json))

            def encode_fast(text: str, special: bool) -> list[int]:
                return [int(i) for i in tok.encode(text, add_special_tokens=special).ids]

            def decode_fast(ids: Sequence[int]) -> str:
                return str(tok.decode(list(ids), skip_special_tokens=True))

            return encode_fast, decode_fast
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(
            f"building an exact-length prompt needs the model's tokenizer, but neither the tokenizers nor the "
            f"transformers package can read {folder}",
            hint="pip install tokenizers",
        ) from None
    hf: Any = AutoTokenizer.from_pretrained(str(folder))

    def encode_hf(text: str, special: bool) -> list[int]:
        return [int(i) for i in hf(text, add_special_tokens=special)["input_ids"]]

    def decode_hf(ids: Sequence[int]) -> str:
        return str(hf.decode(list(ids), skip_special_tokens=True))

    return encode_hf, decode_hf


def build_prompt(tokenizer_dir: str | os.PathLike[str], n_tokens: int) -> str:
    """A raw prompt of plain English that the model's tokenizer encodes to exactly ``n_tokens`` ids.

    The count includes the special tokens the tokenizer adds (Phi-3's ``<s>``), as backends count
    it. Cutting text at a token boundary can re-tokenize differently, so the cut is adjusted until
    the round trip gives exactly ``n_tokens``.
    """
    encode, decode = _tokenizer_functions(Path(tokenizer_dir))
    added = len(encode("a", True)) - len(encode("a", False))
    body = n_tokens - added
    if body < 1:
        raise ConfigError(f"prompt-tokens must be more than the {added} special token(s) the tokenizer adds")
    text = FILLER
    while len(encode(text, False)) < body + 16:
        text += FILLER
    ids = encode(text, False)
    for take in [body + d for d in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5)]:
        if take < 1:
            continue
        candidate = decode(ids[:take]).strip()
        if len(encode(candidate, True)) == n_tokens:
            return candidate
    raise ConfigError(f"could not build a prompt of exactly {n_tokens} tokens with this tokenizer")
