"""``phi3_generate``: tokenize, prefill, then one ``llama_decode`` + sampler-chain draw per token.

The loop calls llama.cpp's C API (the same calls ``Llama.generate`` makes) with a sampler chain
built from :class:`phi3.GenerationConfig` in phi3's documented order:

1. ``ignore_eos``: a logit bias of -inf on every end-of-sequence id of the checkpoint;
2. ``repetition_penalty``: llama.cpp's penalties sampler (same rule as transformers: positive
   logits divided, negative multiplied) over a window of the whole context, primed with the prompt
   tokens, so it covers prompt and output like transformers (``Llama.generate`` defaults to the
   last 64 *generated* tokens only);
3. greedy, or ``temperature`` -> ``top_k`` -> ``top_p`` -> ``min_p`` -> a draw seeded per request
   (``seed``; None draws a fresh seed). llama.cpp's own CLI order is top-k, top-p, min-p, then
   temperature; phi3's is transformers' (temperature first, min-p after top-p).

An output constraint (:mod:`phi3_llamacpp.grammar`) is enforced before the chain: at every step
llguidance computes the allowed tokens and every other logit in llama.cpp's logits buffer is set to
``-inf``, so every step of the chain only chooses among tokens the constraint allows (llama.cpp's own
``common_sampler`` also applies its grammar first). The drawn token advances llguidance's matcher;
once the output is complete only end-of-sequence tokens are allowed, and decoding stops there (or
at once when the constraint admits nothing more). The constraint is compiled when the hook is
called, so one llguidance refuses is an ``UnsupportedError`` before decoding.

Checks happen when the hook is called; the work happens as the caller iterates, so a stream that
phi3 closes at a stop string stops decoding and frees its sampler.
"""

from __future__ import annotations

import codecs
import ctypes
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from phi3.errors import AdapterError, BackendError, ConfigError, PromptTooLongError, UnsupportedError
from phi3.generation_config import GenerationConfig
from phi3.types import Chunk
from phi3_llamacpp.grammar import Guide
from phi3_llamacpp.session import Runtime, live


def encode(runtime: Runtime, prompt: str) -> list[int]:
    """Token ids as the checkpoint's tokenizer gives them (BOS only where the GGUF says so)."""
    return [int(t) for t in runtime.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)]


def generate(runtime: Runtime, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    """Checks now (prompt length, adapter name, the output constraint); decodes as the caller iterates."""
    live(runtime)
    ids = encode(runtime, prompt)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens", hint="pass a non-empty prompt")
    if len(ids) + 1 > runtime.context_length:
        raise PromptTooLongError(
            f"the prompt has {len(ids)} tokens, but this session's context is {runtime.context_length} tokens "
            "(and at least one must be left to generate)",
            hint=runtime.context_hint,
        )
    if config.adapter is not None and config.adapter not in runtime.adapters:
        raise AdapterError(
            f"no adapter named {config.adapter!r} is loaded",
            hint=f"use one of: {', '.join(runtime.adapters) or 'none'}",
        )
    matcher = None
    if config.output_constraint is not None:
        if config.ignore_eos:
            # once the output is complete only end-of-sequence tokens are allowed: with those
            # masked too, no token would be left to draw
            raise UnsupportedError(
                f"ignore_eos cannot be combined with {config.output_constraint.kind} output on phi3-llamacpp",
                hint="drop ignore_eos (the constrained output ends when it is complete)",
            )
        guide = runtime.guide
        if not isinstance(guide, Guide):
            raise BackendError("this llamacpp session has no structured-output state")
        matcher = guide.matcher(config.output_constraint)
    return _stream(runtime, ids, config, matcher)


def build_sampler(
    runtime: Runtime,
    config: GenerationConfig,
    n_vocab: int,
    prompt_ids: Sequence[int] = (),
) -> Any:
    """The llama.cpp sampler chain for ``config`` (the caller frees it); the penalties sampler, if
    any, is primed with the prompt tokens."""
    lc = runtime.llama_cpp
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if config.ignore_eos and runtime.eos_ids:
        biases = (lc.llama_logit_bias * len(runtime.eos_ids))()
        for slot, token in zip(biases, sorted(runtime.eos_ids)):
            slot.token, slot.bias = token, float("-inf")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(runtime.eos_ids), biases))
    if config.repetition_penalty != 1.0:
        penalties = lc.llama_sampler_init_penalties(
            n_vocab, runtime.context_length, config.repetition_penalty, 0.0, 0.0
        )
        lc.llama_sampler_chain_add(chain, penalties)
        for token in prompt_ids:
            lc.llama_sampler_accept(penalties, token)
    if not config.do_sample:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(config.temperature))
    if config.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(config.top_k))
    if config.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(config.top_p, 1))
    if config.min_p > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(config.min_p, 1))
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def start_fresh(runtime: Runtime, adapter: str | None) -> None:
    """An empty KV cache computed under exactly ``adapter`` (None: the base model).

    Every prefill starts from an empty cache, so no key or value computed under the previous
    request's adapter (or none) can reach this one; the adapter set is this request's alone.
    """
    lc = runtime.llama_cpp
    ctx = runtime.llama.ctx
    if runtime.adapters or adapter is not None:
        from phi3_llamacpp.lora import activate

        activate(lc, ctx, runtime.adapters, adapter)
    runtime.llama.reset()  # the Llama object's own prefix bookkeeping: this loop owns the context now
    # metadata only (data=False): every cell is marked empty, so attention masks it out until this
    # prefill overwrites it, as llama.cpp's server does when it reuses a slot. Zeroing the buffers as
    # well (data=True) memsets the whole KV cache: ~18 ms of TTFT for a 4096-token context of the
    # benchmark's mid shape (LLAMACPP_OVERHEAD.md), for nothing a later request could read.
    lc.llama_memory_clear(lc.llama_get_memory(ctx), False)


def _decode(runtime: Runtime, ctx: Any, tokens: Sequence[int]) -> None:
    lc = runtime.llama_cpp
    for start in range(0, len(tokens), runtime.n_batch):
        part = tokens[start : start + runtime.n_batch]
        array = (lc.llama_token * len(part))(*part)
        code = lc.llama_decode(ctx, lc.llama_batch_get_one(array, len(part)))
        if code != 0:
            raise BackendError(f"llama_decode failed with code {code} at {start + len(part)} tokens")


_MINUS_INF = np.float32(-np.inf)


class _Mask:
    """Applies an llguidance matcher's token mask to llama.cpp's logits of the last position."""

    def __init__(self, runtime: Runtime, ctx: Any, n_vocab: int, matcher: Any) -> None:
        self._lc = runtime.llama_cpp
        self._ctx = ctx
        self._n_vocab = n_vocab
        self.matcher = matcher
        self._bits: Any = np.zeros((n_vocab + 31) // 32, dtype=np.uint32)

    def apply(self) -> None:
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self.check()
        # bit i of 32-bit word w is token 32 * w + i; little-endian words, so little-endian bit order
        blocked: Any = np.unpackbits(~self._bits.view(np.uint8), count=self._n_vocab, bitorder="little").view(np.bool_)
        logits = np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        np.copyto(logits, _MINUS_INF, where=blocked)

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise BackendError(
                f"decoding left the structured-output grammar at token {token}: {self.matcher.get_error()}",
                hint="this is a bug in phi3-llamacpp's token masking; please report it",
            )

    def check(self) -> None:
        """:class:`BackendError` if llguidance stopped on an error (e.g. a parser limit), not on a
        complete output."""
        if self.matcher.is_error():
            raise BackendError(
                f"structured output stopped on an llguidance error: {self.matcher.get_error()}",
                hint="simplify the schema or pattern",
            )


def _stream(runtime: Runtime, ids: list[int], config: GenerationConfig, matcher: Any) -> Iterator[Chunk]:
    lc = runtime.llama_cpp
    llama = runtime.llama
    ctx = llama.ctx
    vocab = lc.llama_model_get_vocab(llama.model)
    n_vocab = int(lc.llama_vocab_n_tokens(vocab))
    mask = _Mask(runtime, ctx, n_vocab, matcher) if matcher is not None else None
    chain = build_sampler(runtime, config, n_vocab, ids)
    piece = ctypes.create_string_buffer(256)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    budget = min(config.max_new_tokens, runtime.context_length - len(ids))
    produced = 0
    try:
        start_fresh(runtime, config.adapter)
        _decode(runtime, ctx, ids)
        while produced < budget:
            if mask is not None:
                if mask.matcher.is_stopped():  # complete, and nothing may follow: only EOS is left
                    mask.check()  # (or an error: llguidance stops on those too)
                    break
                mask.apply()
            token = int(lc.llama_sampler_sample(chain, ctx, -1))
            if token in runtime.eos_ids and not config.ignore_eos:
                break
            if mask is not None:
                mask.advance(token)
            produced += 1
            lstrip = 1 if produced == 1 and runtime.strip_first_space else 0
            size = lc.llama_token_to_piece(vocab, token, piece, len(piece), lstrip, False)
            text = utf8.decode(piece.raw[: max(size, 0)])
            yield Chunk(text, (token,), prompt_tokens=len(ids) if produced == 1 else None)
            if produced < budget:
                _decode(runtime, ctx, (token,))
        tail = utf8.decode(b"", final=True)
        if produced == 0 or tail:
            yield Chunk(tail, (), prompt_tokens=len(ids) if produced == 0 else None)
    finally:
        lc.llama_sampler_free(chain)


__all__ = ["build_sampler", "encode", "generate", "start_fresh"]
