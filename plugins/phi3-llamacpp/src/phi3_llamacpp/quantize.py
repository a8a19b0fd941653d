"""``phi3_quantize``: Hugging Face checkpoint -> GGUF (llama.cpp's converter) -> ``llama_model_quantize``.

Precisions map onto llama.cpp file types: int4 = ``Q4_0`` (default; the fastest CPU kernels) or
``Q4_K_M`` (``quant="Q4_K_M"``: better quality, k-quant super-blocks of 256; tensors whose width is
not a multiple of 256 fall back to llama.cpp's own choice), int8 = ``Q8_0``, fp16 = ``F16``, fp32 =
``F32`` (the highest fidelity; what the family parity suite runs). Quantized files start from an
F32 GGUF so nothing is rounded twice.
"""

from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, ConfigError
from phi3.types import OptionSpec, Progress, QuantizeRequest
from phi3_llamacpp import GGUF_NAME, METADATA_NAME, native_log
from phi3_llamacpp.converter import convert, converter_sources

QUANTS: Mapping[str, tuple[str, ...]] = {
    "int4": ("Q4_0", "Q4_K_M"),
    "int8": ("Q8_0",),
    "fp16": ("F16",),
    "fp32": ("F32",),
}
"""precision -> llama.cpp file types it accepts, default first."""
PRECISIONS = ("int4", "int8", "fp16", "fp32")
ARTIFACT_OPTIONS = (
    OptionSpec(
        "quant",
        "choice",
        "llama.cpp file type (int4: Q4_0 or Q4_K_M; default the precision's first)",
        choices=("Q4_0", "Q4_K_M", "Q8_0", "F16", "F32"),
        artifact=True,
    ),
)
"""The artifact option, typed (phi3 checks it); :func:`quant_type` checks it fits the precision."""
FTYPE_NAMES = {
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "F32": "LLAMA_FTYPE_ALL_F32",
}
TOKENIZER_SAMPLES = (
    "The quick brown fox jumps over the lazy dog.",
    "  two spaces, a tab\tand a newline\n then héllo wörld 😀 ß 123 4567",
    "<|user|>\nHello, who are you?<|end|>\n<|assistant|>\n",
)


def quant_type(precision: str, options: Mapping[str, Any]) -> str:
    """The llama.cpp file type for ``precision`` and the ``quant`` option (validated, before any work)."""
    allowed = QUANTS[precision]
    value = options.get("quant")
    if value is None:
        return allowed[0]
    if not isinstance(value, str) or value.upper() not in allowed:  # phi3 checked the name, not the precision
        raise ConfigError(
            f"quant={value!r} is not available for precision {precision}",
            hint=f"use one of {', '.join(allowed)} (int4: Q4_0 or Q4_K_M)",
        )
    return value.upper()


def _eos_ids(model_dir: Path) -> list[int]:
    """Every end-of-sequence id the checkpoint names (config.json and generation_config.json)."""
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(int(v) for v in value)
    return sorted(ids)


PHI3_NOT_RSTRIPPED = frozenset({"<unk>", "<s>", "<|endoftext|>"})


def model_name(model_dir: Path) -> str:
    """``general.name`` for the GGUF: it decides how llama.cpp strips text after special tokens.

    llama.cpp gives every control token the rstrip attribute (except ``<unk>``, ``<s>``,
    ``<|endoftext|>``; ``</s>`` too) only when ``general.name`` contains "phi3" or "phi-3"
    (llama-vocab.cpp, llama-cpp-python 0.3.36); GGUF has no per-token strip flags. Phi-3's
    ``tokenizer.json`` marks exactly those tokens ``rstrip`` (so ``<|user|>\nHi`` drops the
    newline), while Phi-4-mini's strip nothing. The converter would name the GGUF after the
    folder (a hub snapshot hash), so the name is set from the tokenizer's own flags instead.
    """
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return "Phi3"
    added = json.loads(path.read_text(encoding="utf-8")).get("added_tokens", [])
    rstripped = {a["content"] for a in added if a.get("rstrip")}
    phi3_rule = {a["content"] for a in added if a.get("special") and a["content"] not in PHI3_NOT_RSTRIPPED}
    phi3_rule |= {a["content"] for a in added if a["content"] == "</s>"}
    return "Phi3" if rstripped and rstripped == phi3_rule else "Phi"


def _llama_quantize(src: Path, dst: Path, quant: str) -> None:
    from phi3_llamacpp.devices import import_runtime

    llama_cpp = import_runtime()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPE_NAMES[quant])
    params.nthread = os.cpu_count() or 1
    with native_log.captured() as log:  # one line per tensor: phi3's progress says what happens instead
        code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        last = native_log.last_line(log())
    if code != 0 or not dst.is_file():
        raise ArtifactError(f"llama_model_quantize to {quant} failed (code {code})" + (f": {last}" if last else ""))


def check_tokenizer(gguf: Path, model_dir: Path, trust_remote_code: bool = False) -> None:
    """llama.cpp must tokenize like the checkpoint's own tokenizer, or the artifact is refused."""
    from transformers import AutoTokenizer

    from phi3_llamacpp.devices import import_runtime

    llama_cpp = import_runtime()
    reference = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with native_log.captured():  # verbose=False still lets the context's warnings through (0.3.36)
        vocab = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    try:
        for text in TOKENIZER_SAMPLES:
            expected = [int(i) for i in reference(text, add_special_tokens=True)["input_ids"]]
            # add_bos=True lets llama.cpp add BOS only where the GGUF says so (Phi-4-mini: never)
            got = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if got != expected:
                raise ArtifactError(
                    f"llama.cpp tokenizes {text!r} differently from the checkpoint's tokenizer "
                    f"({got[:12]}... vs {expected[:12]}...): phi3-llamacpp refuses a GGUF that would change prompts",
                    hint="report the checkpoint's tokenizer at the phi3 issue tracker",
                )
    finally:
        vocab.close()


def quantize(request: QuantizeRequest, output_dir: Path, progress: Progress, converter_cache: Path) -> dict[str, Any]:
    quant = quant_type(request.precision, request.options)
    model_dir = request.source.path
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    progress("locating llama.cpp's converter", 0, 3)
    sources = converter_sources(converter_cache)
    target = output_dir / GGUF_NAME
    outtype = {"F16": "f16", "F32": "f32"}.get(quant, "f32")
    staged = target if quant in ("F16", "F32") else output_dir / "converted-f32.gguf.tmp"
    progress(f"converting to GGUF ({outtype})", 1, 3)
    convert(sources, model_dir, staged, outtype, model_name(model_dir))
    if staged != target:
        progress(f"quantizing to {quant}", 2, 3)
        try:
            _llama_quantize(staged, target, quant)
        finally:
            staged.unlink(missing_ok=True)
    check_tokenizer(target, model_dir, request.trust_remote_code)
    rope = config.get("rope_scaling") or {}
    metadata = {
        "quant": quant,
        "eos_token_ids": _eos_ids(model_dir),
        "context_length": int(config.get("max_position_embeddings") or 4096),
        "original_max_position_embeddings": config.get("original_max_position_embeddings"),
        "longrope": bool(rope.get("long_factor")),
        "sliding_window": config.get("sliding_window"),
        "converter": str(sources.name),
    }
    (output_dir / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    progress("done", 3, 3)
    return {"context_length": metadata["context_length"], "quant": quant, "gguf": GGUF_NAME}


__all__ = ["ARTIFACT_OPTIONS", "PRECISIONS", "QUANTS", "check_tokenizer", "quant_type", "quantize"]
