"""phi3's generation contract mapped onto Hugging Face transformers' conventions, for backend authors.

Backends that decode with a transformers-style ``generate()`` (optimum-intel's
``OVModelForCausalLM`` in phi3-openvino, the NPU library engine in phi3-npu) or that read a
Hugging Face checkpoint's ``config.json`` share three small rules, kept here once so every backend
(and the fp32 reference in :mod:`phi3.testing.reference`) applies them alike:

- :func:`to_transformers`: a :class:`phi3.GenerationConfig` as ``generate()`` keyword arguments;
- :func:`sampling_seed`: the seed one sampled request uses (the user's, or a fresh one, never a
  silent constant that would make every "random" sample the same);
- :func:`longrope_switch`: the sequence length above which a LongRoPE checkpoint (Phi-3 128k) uses
  its long RoPE factors, which a cached decoding loop must recompute at.

No vendor library is imported: these are plain data mappings (``import phi3`` stays light).
These helpers used to live in ``phi3_openvino.api``, which keeps deprecated aliases for one release.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError
from phi3.generation_config import GenerationConfig

__all__ = ["longrope_switch", "sampling_seed", "to_transformers"]


def sampling_seed(config: GenerationConfig) -> int:
    """The seed to sample with: ``config.seed``, or a fresh random 32-bit one (never a constant)."""
    return config.seed if config.seed is not None else secrets.randbits(32)


def to_transformers(
    config: GenerationConfig,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
) -> dict[str, Any]:
    """Keyword arguments for a transformers ``generate()`` that decodes as ``config`` says.

    ``max_new_tokens`` is the budget the backend settled on (the context may cut the user's);
    ``eos_token_ids`` the ids that end generation for this checkpoint (also used as padding).
    Greedy unless ``do_sample``; the sampling fields are set to None when greedy, or transformers
    warns that they are ignored. ``ignore_eos`` suppresses the EOS ids and forces exactly
    ``max_new_tokens`` tokens. Stop strings are not mapped: phi3 cuts the decoded stream itself
    (transformers' ``StopStringCriteria`` matches vocabulary strings, which disagree with the decoded
    text for byte-fallback tokens). Seeding is the caller's (``torch.manual_seed(sampling_seed(c))``).
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": config.do_sample,
        "repetition_penalty": float(config.repetition_penalty),
        "num_beams": 1,
    }
    if config.do_sample:
        kwargs.update(temperature=float(config.temperature), top_p=float(config.top_p), top_k=config.top_k)
        if config.min_p > 0:
            kwargs["min_p"] = float(config.min_p)
    else:  # unset, or transformers warns that sampling flags are ignored
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if eos_token_ids:
        kwargs["eos_token_id"] = list(eos_token_ids)
        kwargs["pad_token_id"] = eos_token_ids[0]
    if config.ignore_eos and eos_token_ids:
        kwargs.update(suppress_tokens=list(eos_token_ids), min_new_tokens=max_new_tokens)
    return kwargs


def longrope_switch(config: Mapping[str, Any] | str | os.PathLike[str] | object) -> int | None:
    """Where a LongRoPE model switches from its short to its long RoPE factors, else None.

    ``config`` is a checkpoint or artifact folder holding ``config.json``, a ``config.json`` mapping,
    or a transformers ``PretrainedConfig``. The answer is ``original_max_position_embeddings`` when
    the rope entry (``rope_scaling``, or ``rope_parameters`` as transformers 5 writes it) is
    LongRoPE: sequences up to that length are computed with the short factors, longer ones with the
    long factors from position 0, so a KV cache built before the switch is stale after it.
    A folder without config.json is not LongRoPE (None); an unreadable one is an
    :class:`phi3.errors.ArtifactError`.
    """
    if isinstance(config, (str, os.PathLike)):
        config = _read_config(Path(config) / "config.json")
    if isinstance(config, Mapping):
        get = config.get
    else:
        source = config

        def get(key: str, default: Any = None) -> Any:
            return getattr(source, key, default)

    rope = get("rope_parameters") or get("rope_scaling")
    if not isinstance(rope, Mapping) or rope.get("rope_type", rope.get("type")) != "longrope":
        return None
    original = rope.get("original_max_position_embeddings") or get("original_max_position_embeddings")
    return int(original) if original else None


def _read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict: ``{}`` when absent, an ArtifactError naming the fix when damaged."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path} is unreadable: {exc}",
            hint=f"delete {path.parent} (phi3 cache rm {path.parent.name}) and rebuild, or fix the checkpoint",
        ) from None
    return data if isinstance(data, dict) else {}
