"""The transformers fp32 reference that backend parity tests compare against.

Every backend (OpenVINO, ONNX Runtime GenAI, NPU library, llama.cpp) must reproduce what plain
transformers computes on the CPU in fp32 with eager attention: that is the ground truth that has
no accelerator-specific kernels in it. Models are cached per folder because parity tests call
these helpers many times; the cache key includes the weights' mtime and size, so rebuilding a
model in the same folder is picked up.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from phi3.integrations.transformers_generation import longrope_switch

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "encode_prompt",
    "longrope_switch",
    "reference_greedy_ids",
    "reference_logprobs",
    "reference_next_token_logits",
]


def encode_prompt(model_dir: str | os.PathLike[str], prompt: str) -> list[int]:
    """Token ids of ``prompt`` as the backends' tokenizers produce them (with ``<s>`` where the tokenizer adds it)."""
    _, tokenizer = _load(model_dir)
    return [int(i) for i in tokenizer(prompt, add_special_tokens=True)["input_ids"]]


def reference_greedy_ids(
    model_dir: str | os.PathLike[str],
    prompt: str | None = None,
    *,
    input_ids: Sequence[int] | None = None,
    max_new_tokens: int = 20,
    ignore_eos: bool = True,
    recompute: bool = False,
) -> list[int]:
    """Greedy continuation of ``prompt`` (or of ``input_ids``): only the new token ids.

    With ``ignore_eos`` every EOS id (config, generation config and tokenizer) is suppressed, the
    way backends mask EOS in benchmarks, so exactly ``max_new_tokens`` ids come back. Without it,
    generation stops after the first EOS, which is included (as transformers returns it).

    This is an explicit loop, not ``generate()``: transformers' ``Phi3ForCausalLM`` (5.5.4) drops
    its KV cache when generation crosses the LongRoPE switch and then feeds one token, so
    ``generate()`` loses the context there. Here a KV cache is used until the sequence first passes
    ``original_max_position_embeddings``; at that step the whole sequence is recomputed with the
    long factors (what a full forward computes), and the cache continues from there.
    ``recompute=True`` runs a full forward at every step instead (slow; the kit's own tests use it
    to check the cached loop).
    """
    if (prompt is None) == (input_ids is None):
        raise ValueError("pass exactly one of prompt and input_ids")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model, tokenizer = _load(model_dir)  # first: it raises the helpful ImportError
    ids = encode_prompt(model_dir, prompt) if prompt is not None else [int(i) for i in input_ids or ()]
    if not ids:
        raise ValueError("the prompt must have at least one token")
    eos = _eos_ids(model, tokenizer)
    return _greedy_loop(model, ids, max_new_tokens, eos, ignore_eos=ignore_eos, recompute=recompute)


def _greedy_loop(
    model: Any, ids: list[int], max_new_tokens: int, eos: list[int], *, ignore_eos: bool, recompute: bool
) -> list[int]:
    """Greedy decoding with a cache that is rebuilt when the LongRoPE table switches."""
    import torch
    from transformers import DynamicCache

    switch = longrope_switch(model.config)
    sequence = list(ids)
    new: list[int] = []
    cache: Any = None
    cached = 0  # tokens in the cache
    with torch.no_grad():
        while len(new) < max_new_tokens:
            stale = switch is not None and cached <= switch < len(sequence)
            if recompute or cache is None or stale:
                cache, cached = (None if recompute else DynamicCache(config=model.config)), 0
            feed = sequence[cached:]
            out = model(
                input_ids=torch.tensor([feed], dtype=torch.long),
                position_ids=torch.arange(cached, len(sequence), dtype=torch.long)[None],
                past_key_values=cache,
                use_cache=not recompute,
            )
            cached = len(sequence)
            logits = out.logits[0, -1].to(torch.float32)
            if ignore_eos and eos:
                logits[eos] = float("-inf")
            token = int(logits.argmax())
            new.append(token)
            sequence.append(token)
            if not ignore_eos and token in eos:
                break
    return new


def reference_logprobs(model_dir: str | os.PathLike[str], input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """Teacher-forced fp32 log-probabilities, shape ``[len(input_ids), vocab_size]``.

    Row ``i`` is the distribution of the token after ``input_ids[: i + 1]``, all from ONE forward
    over the whole sequence (so on a LongRoPE model longer than the switch every row uses the long
    factors, as a backend's prefill of that sequence does). Used for KL bounds of quantized
    precisions.
    """
    model, _ = _load(model_dir)
    import numpy as np
    import torch

    ids = [int(i) for i in input_ids]
    if not ids:
        raise ValueError("input_ids must not be empty")
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].to(torch.float32)
    return np.asarray(torch.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)


def reference_next_token_logits(
    model_dir: str | os.PathLike[str], prompt_or_ids: str | Sequence[int]
) -> npt.NDArray[np.float32]:
    """fp32 logits (shape ``[vocab_size]``) of the token following ``prompt_or_ids``.

    A string is encoded with :func:`encode_prompt` (so it starts with ``<s>`` on Phi-3 tokenizers);
    ids are used as is.
    """
    model, _ = _load(model_dir)  # first: it raises the helpful ImportError
    import numpy as np
    import torch

    ids = encode_prompt(model_dir, prompt_or_ids) if isinstance(prompt_or_ids, str) else [int(i) for i in prompt_or_ids]
    if not ids:
        raise ValueError("the prompt must have at least one token")
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits
    return np.array(logits[0, -1].to(torch.float32).numpy(), dtype=np.float32)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """All ids that end generation for this checkpoint, in a stable order."""
    found: list[int] = []
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        for value in source if isinstance(source, (list, tuple)) else [source]:
            if value is not None and int(value) not in found:
                found.append(int(value))
    return found


def _load(model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The (model, tokenizer) of ``model_dir``, loaded once per folder content."""
    path = pathlib.Path(model_dir).resolve()
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    version = tuple((w.name, w.stat().st_mtime_ns, w.stat().st_size) for w in weights)
    return _load_cached(str(path), version)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, version: tuple[tuple[str, int, int], ...]) -> tuple[Any, Any]:
    """Load fp32/eager/CPU; ``version`` only keys the cache."""
    del version
    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'the transformers reference needs torch and transformers: pip install "phi3-core[testing]"'
        ) from exc

    dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation="eager", device_map=None, **{dtype_kw: torch.float32}
    )
    model.eval()
    tokenizer: Any = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
