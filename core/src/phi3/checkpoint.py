"""Refuse a checkpoint that cannot make a working artifact, before minutes of quantizing.

Converters are forgiving in the wrong way: a checkpoint without ``tokenizer.json`` or with a layer's
weights missing still exports, and the cached artifact then answers ``<unk><unk>...`` or runs
random weights. This module checks, cheaply, what a ``Phi3ForCausalLM`` needs:

- ``config.json`` is a Phi-3 config whose sizes are positive whole numbers that fit together;
- the safetensors files hold every tensor that config implies, with the right shapes (only the
  JSON headers are read, never the weights);
- a tokenizer exists and parses;
- whether a chat template exists (chat mode needs one; raw prompts do not).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3.errors import ModelNotFoundError

_INT_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "vocab_size",
    "max_position_embeddings",
)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
_FIX = "re-download the checkpoint, or pass a complete Phi-3 folder"


@dataclass(frozen=True)
class CheckpointReport:
    """What the check found besides the errors it raises."""

    tensors: int
    has_chat_template: bool


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config(config: object, where: Path) -> dict[str, Any]:
    """The fields every backend reads, with the types they need."""
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{where} holds a JSON {type(config).__name__}, not a config object", hint=_FIX)
    wrong = [f"{name}={config.get(name)!r}" for name in _INT_FIELDS if not _is_count(config.get(name))]
    kv = config.get("num_key_value_heads")
    if kv is not None and not _is_count(kv):
        wrong.append(f"num_key_value_heads={kv!r}")
    if wrong:
        raise ModelNotFoundError(
            f"{where} has invalid sizes: {', '.join(wrong)} (each must be a whole number > 0)", hint=_FIX
        )
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    if not _is_count(head_dim) or (config.get("head_dim") is None and hidden % heads):
        raise ModelNotFoundError(f"{where}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    kv_heads = kv or heads
    if heads % kv_heads:
        raise ModelNotFoundError(
            f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
    _check_architectures(config.get("architectures"), where)
    _check_rope_scaling(config.get("rope_scaling"), where)
    return config


ROPE_SCALING_TYPES = ("longrope", "su")
"""What the Phi-3 family's configs use: none (4k models) or LongRoPE (128k, Phi-3.5, Phi-4-mini; "su" is
its older name)."""


def _check_architectures(value: object, where: Path) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ModelNotFoundError(
            f'{where}: architectures must be a list of names such as ["Phi3ForCausalLM"], got {value!r}', hint=_FIX
        )


def _check_rope_scaling(value: object, where: Path) -> None:
    """LongRoPE's fields as every converter reads them: a type, and two factor lists of numbers."""
    if value is None:
        return
    kind = value.get("type", value.get("rope_type")) if isinstance(value, dict) else None
    if kind not in ROPE_SCALING_TYPES:
        raise ModelNotFoundError(
            f"{where}: rope_scaling {value!r} is not one the Phi-3 family uses (null, or type "
            f"{' / '.join(ROPE_SCALING_TYPES)})",
            hint=_FIX,
        )
    assert isinstance(value, dict)
    for name in ("short_factor", "long_factor"):
        factors = value.get(name)
        if not isinstance(factors, list) or not factors or not all(_is_number(f) for f in factors):
            raise ModelNotFoundError(
                f"{where}: rope_scaling.{name} must be a list of numbers, got {factors!r}", hint=_FIX
            )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def expected_tensors(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a ``Phi3ForCausalLM`` checkpoint's tensors, as transformers saves them."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    vocab = config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
    }
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{i}"
        shapes[f"{prefix}.self_attn.qkv_proj.weight"] = ((heads + 2 * kv) * head_dim, hidden)
        shapes[f"{prefix}.self_attn.o_proj.weight"] = (hidden, heads * head_dim)
        shapes[f"{prefix}.mlp.gate_up_proj.weight"] = (2 * inter, hidden)
        shapes[f"{prefix}.mlp.down_proj.weight"] = (hidden, inter)
        shapes[f"{prefix}.input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (hidden,)
    return shapes


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header, checking the file is long enough for them."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ModelNotFoundError(f"{path} is truncated (no safetensors header)", hint=_FIX)
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER_BYTES:
                raise ModelNotFoundError(f"{path} is not a safetensors file (header of {length} bytes)", hint=_FIX)
            header = json.loads(fh.read(length))
            fh.seek(0, 2)
            size = fh.tell()
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc.strerror or exc}", hint="check its permissions") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelNotFoundError(f"{path} has a corrupt safetensors header", hint=_FIX) from None
    if not isinstance(header, dict):
        raise ModelNotFoundError(f"{path} has a corrupt safetensors header", hint=_FIX)
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shapes[name] = tuple(int(d) for d in info["shape"])
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ModelNotFoundError(f"{path} has a corrupt entry for tensor {name!r}", hint=_FIX) from None
    if 8 + length + end > size:
        raise ModelNotFoundError(
            f"{path} is truncated: its header needs {8 + length + end} bytes, the file has {size}", hint=_FIX
        )
    return shapes


def _weight_files(folder: Path) -> Iterator[Path]:
    yield from sorted(folder.glob("*.safetensors"))


def check_weights(folder: Path, config: Mapping[str, Any]) -> int:
    """Every tensor the config implies is present, with its shape; returns how many were checked."""
    files = list(_weight_files(folder))
    if not files:
        raise ModelNotFoundError(
            f"{folder} has no *.safetensors weights",
            hint="phi3 reads safetensors checkpoints (convert *.bin with transformers' save_pretrained)",
        )
    found: dict[str, tuple[int, ...]] = {}
    for path in files:
        found.update(read_safetensors_header(path))
    expected = expected_tensors(config)
    missing = [name for name in expected if name not in found]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotFoundError(f"{folder} lacks weights the config needs: {shown}", hint=_FIX)
    for name, shape in expected.items():
        if found[name] != shape:
            raise ModelNotFoundError(
                f"{folder}: tensor {name} has shape {list(found[name])}, config.json implies {list(shape)}",
                hint="the weights and config.json come from different models; use the matching pair",
            )
    return len(expected)


def check_tokenizer(folder: Path) -> bool:
    """A tokenizer that parses; returns whether a chat template exists."""
    tokenizer_json = folder / "tokenizer.json"
    if not tokenizer_json.is_file() and not (folder / "tokenizer.model").is_file():
        raise ModelNotFoundError(
            f"{folder} has no tokenizer (tokenizer.json or tokenizer.model)",
            hint="copy the tokenizer files of the original checkpoint into this folder",
        )
    if tokenizer_json.is_file():
        try:
            data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ModelNotFoundError(f"{tokenizer_json} is unreadable or corrupt: {exc}", hint=_FIX) from None
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ModelNotFoundError(f"{tokenizer_json} is not a tokenizers file (no 'model' section)", hint=_FIX)
    config = _json_object(folder / "tokenizer_config.json")
    template = config.get("chat_template") if config is not None else None
    return bool(template) or (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file()


def _json_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"{path} is unreadable or corrupt: {exc}", hint=_FIX) from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path} holds a JSON {type(data).__name__}, not an object", hint=_FIX)
    return data


def check_checkpoint(folder: Path) -> CheckpointReport:
    """Everything above, in order of cost; raises :class:`ModelNotFoundError` naming the first problem."""
    config_path = folder / "config.json"
    config = check_config(_json_object(config_path), config_path)
    tensors = check_weights(folder, config)
    return CheckpointReport(tensors=tensors, has_chat_template=check_tokenizer(folder))


__all__ = [
    "CheckpointReport",
    "check_checkpoint",
    "check_config",
    "check_tokenizer",
    "check_weights",
    "expected_tensors",
    "read_safetensors_header",
]
