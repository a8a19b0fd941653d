"""Hugging Face Phi-3 checkpoint -> one GGUF file that llama.cpp runs, written with the ``gguf`` package.

This is the example backend's own converter (not counted in its plugin code: any runtime brings
its converter). It covers the Phi-3 layout with a Llama-style byte-fallback BPE tokenizer (Phi-3,
Phi-3.5 and their 128k LongRoPE variants), as llama.cpp's ``convert_hf_to_gguf.py`` writes it:

- tensors renamed by gguf's own Phi-3 name map (fused ``qkv_proj`` and ``gate_up_proj`` stay fused);
  2-D weights in the precision's type (``F32``, ``F16``, ``Q8_0``, ``Q4_0``), norms and RoPE factors in F32.
  gguf's quantizers give the bytes llama.cpp's ``llama_model_quantize`` gives (checked on the tiny
  model); like it, int4 keeps the output head finer (Q8_0 here; llama.cpp takes Q6_K where the width
  allows, which gguf cannot write);
- hyperparameters under ``phi3.*``; LongRoPE as ``rope_factors_long/short`` tensors plus the
  attention factor ``sqrt(1 + ln(scale) / ln(original))``;
- the vocabulary from ``tokenizer.json``, scored the way llama.cpp's SentencePiece tokenizer
  merges: a merged piece scores ``-rank`` of the BPE merge that makes it (the lowest rank first,
  which is BPE's order), bytes ``<0xNN>`` and special tokens typed; special ids and the chat
  template by ``gguf.SpecialVocab``. ``general.name`` "Phi3" turns on llama.cpp's Phi-3 rule that
  control tokens swallow the whitespace after them (what the checkpoint's ``rstrip`` flags say).

After writing, llama.cpp's tokenizer must encode sample texts exactly as the checkpoint's own
tokenizer does, or the conversion is refused (a GGUF that changes prompts would change answers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, UnsupportedError

QUANT_TYPES = {"fp32": "F32", "fp16": "F16", "int8": "Q8_0", "int4": "Q4_0"}
"""phi3 precision -> GGML tensor type of the 2-D weights."""
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7}
"""``general.file_type`` (llama.cpp's ``LLAMA_FTYPE_*``) of each."""
SAMPLES = (
    "The quick brown fox jumps over the lazy dog.",
    "  two spaces, a tab\tand a newline\n then héllo wörld 😀 123",
    "<|user|>\nHello, who are you?<|end|>\n<|assistant|>\n",
)
# gguf's SentencePieceTokenTypes
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def convert(model_dir: Path, out: Path, precision: str) -> dict[str, Any]:
    """Write ``out`` (a GGUF) from the checkpoint in ``model_dir``; returns the manifest fields."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "phi3":
        raise UnsupportedError(f"this converter handles Phi-3 checkpoints, not {config.get('model_type')!r}")
    qtype = gguf.GGMLQuantizationType[QUANT_TYPES[precision]]
    writer = gguf.GGUFWriter(str(out), "phi3")
    try:
        _hyperparameters(writer, config, FILE_TYPES[qtype.name])
        _vocabulary(writer, model_dir, int(config["vocab_size"]))
        _tensors(writer, model_dir, config, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    check_tokenizer(out, model_dir)
    return {"context_length": int(config["max_position_embeddings"]), "gguf_type": qtype.name}


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """The rope entry as transformers 5 (``rope_parameters``) or the hub's config.json (``rope_scaling``) has it."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope.setdefault("original_max_position_embeddings", config.get("original_max_position_embeddings"))
    return rope


def _hyperparameters(writer: Any, config: dict[str, Any], file_type: int) -> None:
    import gguf

    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    rope = _rope(config)
    writer.add_name("Phi3")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"] or 0))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(int(float(rope.get("partial_rotary_factor", 1.0)) * hidden) // heads)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_sliding_window(int(config.get("sliding_window") or 0))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _vocabulary(writer: Any, model_dir: Path, vocab_size: int) -> None:
    import gguf

    data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise UnsupportedError(
            "this converter handles Llama-style byte-fallback BPE tokenizers (Phi-3, Phi-3.5) only",
            hint="use phi3-llamacpp (llama.cpp's own converter) for other tokenizers",
        )
    rank: dict[str, int] = {}
    for i, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores, types = [-10000.0] * vocab_size, [UNUSED] * vocab_size
    for piece, token in model["vocab"].items():
        tokens[token] = piece.encode("utf-8")
        if piece == model.get("unk_token"):
            types[token], scores[token] = UNKNOWN, 0.0
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            types[token], scores[token] = BYTE, 0.0
        else:
            types[token], scores[token] = NORMAL, -float(rank.get(piece, 1_000_000 + token))
    for added in data.get("added_tokens", []):
        token = int(added["id"])
        tokens[token], scores[token] = added["content"].encode("utf-8"), -1000.0
        types[token] = (
            UNKNOWN if added["content"] == model.get("unk_token") else CONTROL if added["special"] else USER_DEFINED
        )
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def _tensors(writer: Any, model_dir: Path, config: dict[str, Any], qtype: Any) -> None:
    import gguf
    import torch
    from safetensors.torch import load_file

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.PHI3, int(config["num_hidden_layers"]))
    weights: dict[str, Any] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        weights.update(load_file(str(shard)))
    if "lm_head.weight" not in weights:  # tied embeddings: llama.cpp's phi3 graph wants an output tensor
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    for name, tensor in weights.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ArtifactError(f"{model_dir} has a tensor this converter does not know: {name}")
        array = tensor.to(torch.float32).numpy()
        kind = qtype if array.ndim == 2 else gguf.GGMLQuantizationType.F32
        if kind == gguf.GGMLQuantizationType.Q4_0 and gguf_name == "output.weight":
            kind = gguf.GGMLQuantizationType.Q8_0  # llama-quantize keeps the head finer (Q6_K, else Q8_0)
        if kind in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0) and array.shape[-1] % 32:
            kind = gguf.GGMLQuantizationType.F16  # their blocks are 32 wide (llama.cpp falls back alike)
        writer.add_tensor(gguf_name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    _rope_factors(writer, config)


def _rope_factors(writer: Any, config: dict[str, Any]) -> None:
    """LongRoPE (the 128k models): both factor tables and the attention factor, as llama.cpp reads them."""
    import gguf
    import numpy as np

    rope = _rope(config)
    if not rope.get("long_factor"):
        return
    original = int(rope["original_max_position_embeddings"])
    scale = int(config["max_position_embeddings"]) / original
    writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
    for kind, key in (
        (gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, "long_factor"),
        (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, "short_factor"),
    ):
        writer.add_tensor(gguf.TENSOR_NAMES[kind] + ".weight", np.asarray(rope[key], dtype=np.float32))


def check_tokenizer(gguf_file: Path, model_dir: Path) -> None:
    """llama.cpp must tokenize :data:`SAMPLES` exactly as the checkpoint's tokenizer does."""
    import llama_cpp
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = llama_cpp.Llama(str(gguf_file), vocab_only=True, verbose=False)
    try:
        for text in SAMPLES:
            expected = [int(i) for i in reference(text, add_special_tokens=True)["input_ids"]]
            got = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if got != expected:
                raise ArtifactError(
                    f"llama.cpp tokenizes {text!r} as {got[:12]}..., the checkpoint as {expected[:12]}...",
                    hint="this converter does not support this tokenizer; use phi3-llamacpp",
                )
    finally:
        vocab.close()
