"""phi3's :class:`~phi3.GenerationConfig` -> ONNX Runtime GenAI search options.

Every option is set explicitly on each generation, because the artifact's genai_config.json
carries defaults of its own (``top_k: 50``, the checkpoint's ``temperature`` ...) that would
otherwise leak into phi3's "greedy unless told" behaviour.

How each field maps, and why (onnxruntime-genai 0.13.1 .. 0.18.0 behave the same here):

- ``max_new_tokens`` -> ``max_length`` = prompt tokens + max_new_tokens, capped at the context.
- ``ignore_eos`` -> ``min_length`` = ``max_length``: the runtime masks every EOS id until
  ``min_length`` is reached, which is exactly "keep decoding past end-of-sequence".
- greedy (``do_sample=False``) -> ``do_sample=False``; the runtime then picks the arg-max.
- ``top_k=0`` -> ``top_k=0``: the runtime samples top-p only (``top_p=1`` is the full distribution),
  the same meaning phi3 gives 0; ``top_k=1`` is greedy in both.
- ``seed`` -> ``random_seed``, which the runtime takes as a signed 32-bit int: seeds are folded to
  31 bits (``-1`` means "random" to the runtime, so negative values are never used).
- ``repetition_penalty`` -> ``repetition_penalty`` (applied over prompt and output, as transformers).
- ``stop`` has no runtime equivalent before 0.18; phi3 cuts the stream at stop strings itself.
"""

from __future__ import annotations

from typing import Any

from phi3.generation_config import GenerationConfig

SEED_MODULUS = 2**31


def max_length(prompt_tokens: int, config: GenerationConfig, context_length: int) -> int:
    """Total sequence length the runtime may reach (prompt + new tokens), within the context."""
    return min(context_length, prompt_tokens + config.max_new_tokens)


def search_options(config: GenerationConfig, prompt_tokens: int, context_length: int) -> dict[str, Any]:
    """Keyword arguments for ``og.GeneratorParams.set_search_options``."""
    total = max_length(prompt_tokens, config, context_length)
    options: dict[str, Any] = {
        "max_length": total,
        "min_length": total if config.ignore_eos else 0,
        "do_sample": config.do_sample,
        "num_beams": 1,
        "batch_size": 1,
        "repetition_penalty": float(config.repetition_penalty),
    }
    if config.do_sample:
        options.update(temperature=float(config.temperature), top_p=float(config.top_p), top_k=int(config.top_k))
        if config.seed is not None:
            options["random_seed"] = int(config.seed) % SEED_MODULUS
    else:
        options.update(temperature=1.0, top_p=1.0, top_k=1)
    return options


__all__ = ["max_length", "search_options"]
