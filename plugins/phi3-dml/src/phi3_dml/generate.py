"""``phi3_generate``: the ``og.Generator`` loop, streamed through the runtime's tokenizer stream.

Checks happen when the hook is called (too-long and empty prompts raise at once); the work
(prefill, then one token per step) happens only as the caller iterates, so a stream that is
closed early, e.g. by phi3 at a stop string, stops decoding and frees the generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from phi3.errors import AdapterError, ConfigError, PromptTooLongError
from phi3.generation_config import GenerationConfig
from phi3.integrations.detokenize import IncrementalDecoder
from phi3.types import Chunk

from phi3_dml import guidance
from phi3_dml.runtime import Runtime
from phi3_dml.search_options import search_options


def generate(runtime: Runtime, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    """Validate, then return the lazy token stream."""
    if runtime.model is None:
        raise ConfigError("this model has been unloaded; load it again")
    ids = runtime.encode(prompt)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens", hint="pass a non-empty prompt")
    context = runtime.context_length
    if context and len(ids) + 1 > context:
        raise PromptTooLongError(
            f"the prompt has {len(ids)} tokens, but the model's context is {context} tokens "
            "(and at least one must be left to generate)",
            hint="shorten the prompt",
        )
    if config.ignore_eos and config.output_constraint is not None:
        # the runtime masks EOS until min_length while the grammar allows only EOS once the output is
        # complete: onnxruntime-genai 0.18.0 then fails mid-stream ("compute_mask() called after stop")
        raise ConfigError(
            f"ignore_eos cannot be combined with {config.output_constraint.kind} on phi3-dml: "
            "onnxruntime-genai's guidance ends the output with end-of-sequence",
            hint="drop ignore_eos (the constrained output ends when the grammar is complete)",
        )
    params = runtime.og.GeneratorParams(runtime.model)
    context = runtime.context_length or len(ids) + config.max_new_tokens
    params.set_search_options(**search_options(config, len(ids), context))
    guidance.apply(params, config.output_constraint)
    adapter = _adapter(runtime, config)
    generator = guidance.generator(runtime.og, runtime.model, params, config.output_constraint)
    _activate(runtime, generator, adapter)
    return _stream(runtime, ids, config, params, generator, adapter)


def _adapter(runtime: Runtime, config: GenerationConfig) -> str | None:
    """The LoRA adapter this generation uses (phi3 has checked the name is one the model loaded)."""
    adapter = getattr(config, "adapter", None)
    if adapter is not None and runtime.adapters is None:
        raise AdapterError(
            f"adapter {adapter!r} is not loaded: this model was loaded without adapters",
            hint="load it with adapters={...} (phi3 generate --adapter NAME=PATH)",
        )
    return adapter


def _activate(runtime: Runtime, generator: Any, adapter: str | None) -> None:
    """Each generation gets a fresh ``og.Generator``: with no adapter set it runs the graph's rank-0
    default (the base model), so nothing carries over from the previous request."""
    if adapter is not None:
        generator.set_active_adapter(runtime.adapters, adapter)


def _stream(
    runtime: Runtime, ids: list[int], config: GenerationConfig, params: Any, generator: Any, adapter: str | None
) -> Iterator[Chunk]:
    og = runtime.og
    # Under a grammar the recompute below would feed the output so far back as prompt, and the
    # grammar would start over: a constrained generation runs straight through the switch.
    switch = runtime.longrope_switch if config.output_constraint is None else None
    try:
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        decoder = IncrementalDecoder(runtime.decode)
        tokens = list(ids)
        produced = 0
        while produced < config.max_new_tokens and not generator.is_done():
            if switch is not None and len(ids) <= switch and len(tokens) == switch + 1:
                # Workaround for onnxruntime-genai 0.18.0 (and 0.13.1) LongRoPE graphs: they choose the
                # short or long cos/sin table by the current total length, so the step that crosses
                # original_max_position_embeddings would attend with long-factor queries to keys the
                # cache holds rotated with the short factors. transformers recomputes the whole
                # sequence with the long factors there; so do we, once per generation: a fresh
                # generator prefilled with every token so far (the same total length, so the same
                # search options). Tracked by test_longrope_crossing_still_needs_a_recompute.
                del generator
                generator = og.Generator(runtime.model, params)
                _activate(runtime, generator, adapter)
                generator.append_tokens(np.asarray(tokens, dtype=np.int32))
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            if token in runtime.eos_ids and not config.ignore_eos:
                break
            produced += 1
            tokens.append(token)
            yield Chunk(decoder.push([token]), (token,), prompt_tokens=len(ids) if produced == 1 else None)
        rest = decoder.flush()
        if produced == 0 or rest:
            yield Chunk(rest, (), prompt_tokens=len(ids) if produced == 0 else None)
    finally:
        del generator


__all__ = ["generate"]
