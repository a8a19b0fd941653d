"""Run llama.cpp's own ``convert_hf_to_gguf.py`` with two narrow workarounds (a subprocess entry).

    python -m phi3_llamacpp.convert_driver SOURCES MODEL_DIR --outtype f32 --outfile OUT.gguf

``SOURCES`` is a folder holding ``convert_hf_to_gguf.py``, its ``conversion`` package and
``gguf-py`` (see :mod:`phi3_llamacpp.converter`). Everything else is the converter's own code and
CLI; the workarounds only replace steps that *refuse* a checkpoint, never ones that succeed:

1. A Phi-3 checkpoint without a SentencePiece ``tokenizer.model`` (what transformers 5's
   ``save_pretrained`` writes: only ``tokenizer.json``). The converter's Phi-3 path raises
   ``Missing tokenizer.model`` (llama.cpp as vendored in llama-cpp-python 0.3.36). The same
   SentencePiece-style vocabulary (pieces, merge-order scores, byte/control/user token types) is
   read from ``tokenizer.json`` instead; phi3_quantize then checks that llama.cpp tokenizes sample
   texts exactly as the checkpoint's tokenizer does.
2. A GPT-2 byte-level BPE (Phi-4-mini's family) whose pre-tokenizer hash is not in the converter's
   table (``get_vocab_base_pre`` raises ``BPE pre-tokenizer was not recognized``; llama-cpp-python
   0.3.36). Only a ``tokenizer.json`` whose pre-tokenizer *is* GPT-2's (a plain ``ByteLevel`` with
   its regex) is mapped to llama.cpp's ``gpt-2`` pre-tokenizer; anything else still fails.

Both are pinned by strict xfail tests in ``tests/test_converter.py`` that turn red when upstream
converts these checkpoints itself.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

BYTE_PIECE_PREFIX = "<0x"


def _token_json(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return data


def spm_vocab_from_tokenizer_json(model_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """SentencePiece-style (pieces, scores, types) from a Llama-style BPE ``tokenizer.json``.

    llama.cpp's SPM tokenizer merges the adjacent pair whose *result* has the highest score, which
    equals BPE's lowest merge rank when each merged piece is scored ``-rank`` of the merge that
    creates it (true for a trained BPE vocabulary). Types: 2 unknown, 3 control, 4 user-defined,
    5 unused (padding rows), 6 byte, 1 normal (gguf's SentencePieceTokenTypes).
    """
    data = _token_json(model_dir)
    model = data["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = model.get("merges") or []
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]".encode() for i in range(size)]
    scores = [-10000.0] * size
    types = [5] * size
    unk = model.get("unk_token")
    for piece, token_id in vocab.items():
        tokens[token_id] = piece.encode("utf-8")
        if piece == unk:
            types[token_id], scores[token_id] = 2, 0.0
        elif piece.startswith(BYTE_PIECE_PREFIX) and piece.endswith(">") and len(piece) == 6:
            types[token_id], scores[token_id] = 6, 0.0
        else:
            types[token_id] = 1
            scores[token_id] = -float(rank[piece]) if piece in rank else -1e6 - token_id
    for added in data.get("added_tokens", []):
        token_id = int(added["id"])
        tokens[token_id] = added["content"].encode("utf-8")
        scores[token_id] = -1000.0
        if added["content"] == unk:
            types[token_id] = 2
        else:
            types[token_id] = 3 if added.get("special") else 4
    return tokens[:size], scores[:size], types[:size]


def is_gpt2_byte_level(model_dir: Path) -> bool:
    """Whether the checkpoint's pre-tokenizer is exactly GPT-2's (plain ByteLevel with its regex)."""
    pre = _token_json(model_dir).get("pre_tokenizer") or {}
    return pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False)


def _install_workarounds() -> None:
    # imported by name: these modules exist only on the converter's path (set up in main())
    gguf = importlib.import_module("gguf")
    TextModel = importlib.import_module("conversion.base").TextModel
    Phi3MiniModel = importlib.import_module("conversion.phi").Phi3MiniModel

    original_set_vocab = Phi3MiniModel.set_vocab

    def set_vocab(self: Any) -> None:
        config_file = self.dir_model / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        if (
            (self.dir_model / "tokenizer.model").is_file()
            or config.get("tokenizer_class") == "GPT2Tokenizer"
            or not (self.dir_model / "tokenizer.json").is_file()
        ):
            original_set_vocab(self)
            return
        # Workaround 1 (llama-cpp-python 0.3.36's converter needs tokenizer.model): see the module doc.
        tokens, scores, types = spm_vocab_from_tokenizer_json(self.dir_model, int(self.hparams["vocab_size"]))
        self.gguf_writer.add_tokenizer_model("llama")
        self.gguf_writer.add_tokenizer_pre("default")
        self.gguf_writer.add_token_list(tokens)
        self.gguf_writer.add_token_scores(scores)
        self.gguf_writer.add_token_types(types)
        gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(self.gguf_writer)

    original_pre = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return str(original_pre(self, tokenizer))
        except NotImplementedError:
            # Workaround 2 (llama-cpp-python 0.3.36: unknown hash for a GPT-2 byte-level BPE).
            if is_gpt2_byte_level(self.dir_model):
                return "gpt-2"
            raise

    Phi3MiniModel.set_vocab = set_vocab
    TextModel.get_vocab_base_pre = get_vocab_base_pre


def main(argv: list[str]) -> None:
    sources = Path(argv[0]).resolve()
    script = sources / "convert_hf_to_gguf.py"
    sys.path[:0] = [str(sources), str(sources / "gguf-py")]
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _install_workarounds()
    sys.argv = [str(script), *argv[1:]]
    module.main()


if __name__ == "__main__":
    main(sys.argv[1:])
