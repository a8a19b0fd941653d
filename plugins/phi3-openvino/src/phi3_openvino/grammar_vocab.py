"""A genai ``Tokenizer`` whose vocabulary table is what each token really decodes to, for XGrammar.

Why this exists (openvino-genai 2026.4.1): ``StructuredOutputConfig`` hands XGrammar the strings of
the detokenizer's ``VocabDecoder`` constant as a *raw* vocabulary (``VocabType::RAW``). For a
Llama/Phi-3 style tokenizer (BPE with byte fallback, which openvino-tokenizers converts from
``tokenizer.json`` without decoding the pieces) those strings are the pieces as written:
``"▁the"`` for " the" and ``"<0x7B>"`` for "{". The grammar then believes ``{`` cannot be produced
at all when the vocabulary has no ``{`` piece (the tiny test tokenizer: every token is masked, and
genai emits token 0 until ``max_new_tokens``), and on a real Phi-3 vocabulary it would accept
``<0x22>`` inside a JSON string as six literal characters while the detokenizer turns it into ``"``.
Special tokens are raw too: ``<|end|>`` counts as seven characters of text for the grammar but
stops generation. (Byte-level vocabularies such as Phi-4-mini's are already stored decoded.)

The fix keeps the artifact as openvino-tokenizers built it and builds, at load, a second
detokenizer whose ``VocabDecoder`` holds each token's decoded bytes, computed by running the
artifact's own detokenizer steps that act on one token at a time (``VocabDecoder`` with special
tokens skipped, then e.g. the ``▁`` -> space replacement and ``ByteFallback``), so nothing about a
tokenizer family is hard-coded here. Special tokens become empty strings, which XGrammar never
allows (end-of-sequence ids are passed to it separately). Because those per-token steps are
idempotent on decoded bytes, the new detokenizer decodes exactly like the original (checked at
load on the whole vocabulary; the tests also compare random sequences), except that special tokens
decode to nothing even with ``skip_special_tokens=False``: phi3 always skips them.

One difference the grammar cannot see: SentencePiece decoders strip the leading space of the whole
output, so a regular expression that must start with a space cannot match the decoded text.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3_openvino.artifact import DETOKENIZER_XML, MODEL_XML

MODEL_BIN = MODEL_XML.replace(".xml", ".bin")


@dataclass(frozen=True)
class GrammarTokenizer:
    """The outcome: a tokenizer to build the pipeline with, or why there is none."""

    tokenizer: Any | None
    """``openvino_genai.Tokenizer`` with the decoded vocabulary, or None."""
    reason: str = ""
    """Why structured output cannot be offered (empty when ``tokenizer`` is set)."""


def _ops(model: Any, type_name: str) -> list[Any]:
    return [node for node in model.get_ordered_ops() if node.get_type_name() == type_name]


def _run_per_token_steps(core: Any, model: Any, last: list[Any], vocab_size: int) -> list[bytes]:
    """Each token id alone through the detokenizer up to (not including) the join of the tokens:
    ``last`` are the (begins, ends, chars) outputs the join reads."""
    import numpy as np
    import openvino as ov

    sub = ov.Model(last, model.get_parameters())
    compiled = core.compile_model(sub, "CPU")
    out = compiled(np.arange(vocab_size, dtype=np.int64).reshape(1, -1))
    begins, ends, chars = (np.asarray(out[i]) for i in range(3))
    data = chars.tobytes()
    return [data[int(b) : int(e)] for b, e in zip(begins, ends, strict=True)]


def decoded_vocabulary(detokenizer: Any, core: Any) -> tuple[list[bytes], Any, list[Any]] | str:
    """(bytes per token id, the VocabDecoder node, the per-token strings the join reads), or why not."""
    decoders = _ops(detokenizer, "VocabDecoder")
    joins = _ops(detokenizer, "FuzeRagged")
    if len(decoders) != 1 or len(joins) != 1 or len(detokenizer.get_parameters()) != 1:
        return "the detokenizer is not the VocabDecoder -> ... -> FuzeRagged pipeline openvino-tokenizers builds"
    decoder = decoders[0]
    if decoder.get_input_size() < 4 or any(
        decoder.input(i).get_source_output().get_node().get_type_name() != "Constant" for i in (1, 2, 3)
    ):
        return "the detokenizer's vocabulary is not a constant table"
    # the join's inputs 2, 3 are the per-token strings' begins and ends; their chars follow them
    source = joins[0].input(2).get_source_output()
    node, index = source.get_node(), source.get_index()
    if node.get_output_size() < index + 3 or joins[0].input(3).get_source_output().get_node() is not node:
        return f"unexpected per-token step {node.get_type_name()} before the join"
    last = [node.output(index + i) for i in range(3)]
    vocab_size = int(decoder.input(1).get_source_output().get_node().get_output_shape(0)[0])
    return _run_per_token_steps(core, detokenizer, last, vocab_size), decoder, last


def _replace_table(decoder: Any, tokens: list[bytes]) -> None:
    import numpy as np
    from openvino import opset13

    lengths = np.array([len(token) for token in tokens], dtype=np.int32)
    ends = np.cumsum(lengths, dtype=np.int32)
    begins = (ends - lengths).astype(np.int32)
    chars = np.frombuffer(b"".join(tokens) or b"\0", dtype=np.uint8)
    for index, table in ((1, begins), (2, ends), (3, chars)):
        decoder.input(index).replace_source_output(opset13.constant(table).output(0))


def grammar_tokenizer(folder: Path) -> GrammarTokenizer:
    """The artifact's tokenizer with a decoded vocabulary table (see the module docstring)."""
    import openvino as ov
    import openvino_genai
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations with OpenVINO)

    core = ov.Core()
    detokenizer = core.read_model(str(folder / DETOKENIZER_XML))
    found = decoded_vocabulary(detokenizer, core)
    if isinstance(found, str):
        return GrammarTokenizer(None, found)
    tokens, decoder, last = found
    _replace_table(decoder, tokens)
    again = _run_per_token_steps(core, detokenizer, last, len(tokens))
    if again != tokens:  # the per-token steps must leave decoded bytes as they are
        return GrammarTokenizer(None, "the detokenizer's per-token steps change already decoded tokens")
    with tempfile.TemporaryDirectory(prefix="phi3-ov-grammar-") as tmp:
        staging = Path(tmp)
        for item in folder.iterdir():  # tokenizer model, configs, chat template: everything but the LLM
            if (
                item.is_file()
                and item.name not in (MODEL_XML, MODEL_BIN)
                and not item.name.startswith("openvino_detokenizer.")
            ):
                shutil.copy2(item, staging / item.name)
        ov.save_model(detokenizer, str(staging / DETOKENIZER_XML), compress_to_fp16=False)
        tokenizer = openvino_genai.Tokenizer(str(staging))
    return GrammarTokenizer(tokenizer)


__all__ = ["GrammarTokenizer", "decoded_vocabulary", "grammar_tokenizer"]
