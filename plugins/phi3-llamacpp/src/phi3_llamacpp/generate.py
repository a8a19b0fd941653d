"""``phi3_generate``: tokenize, prefill, then one ``llama_decode`` + sampler-chain draw per token.

The loop calls llama.cpp's C API (the same calls ``Llama.generate`` makes) with a sampler chain
built from :class:`phi3.GenerationConfig` in phi3's documented order:

1. ``ignore_eos``: a logit bias of -inf on every end-of-sequence id of the checkpoint;
2. ``repetition_penalty``: llama.cpp's penalties sampler (same rule as transformers: positive
   logits divided, negative multiplied) over a window of the whole context, primed with the prompt
   tokens, so it covers prompt and output like transformers (``Llama.generate`` defaults to the
   last 64 *generated* tokens only);
3. greedy, or ``temperature`` -> ``top_k`` -> ``top_p`` -> a draw seeded per request (``seed``;
   None draws a fresh seed). llama.cpp's own CLI order is top-k, top-p, then temperature.

An output constraint (:mod:`phi3_llamacpp.grammar`) puts llama.cpp's grammar sampler first in the
chain, so every later step only chooses among tokens the grammar allows (llama.cpp's own
``common_sampler`` also applies the grammar before its chain); the grammar masks end-of-generation
tokens until it accepts, and under a grammar decoding stops at any token llama.cpp calls
end-of-generation. The grammar is parsed when the hook is called, so one llama.cpp refuses is an
``UnsupportedError`` before decoding.

Checks happen when the hook is called; the work happens as the caller iterates, so a stream that
phi3 closes at a stop string stops decoding and frees its sampler.
"""

from __future__ import annotations

import codecs
import ctypes
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from phi3.errors import BackendError, ConfigError, PromptTooLongError, UnsupportedError
from phi3.generation_config import GenerationConfig
from phi3.types import Chunk, SessionHandle
from phi3_llamacpp.grammar import gbnf
from phi3_llamacpp.session import Runtime, _runtime


def encode(runtime: Runtime, prompt: str) -> list[int]:
    """Token ids as the checkpoint's tokenizer gives them (BOS only where the GGUF says so)."""
    return [int(t) for t in runtime.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)]


def generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    runtime = _runtime(session)
    ids = encode(runtime, prompt)
    if not ids:
        raise ConfigError("the prompt encodes to no tokens", hint="pass a non-empty prompt")
    if len(ids) + 1 > runtime.context_length:
        raise PromptTooLongError(
            f"the prompt has {len(ids)} tokens, but this session's context is {runtime.context_length} tokens "
            "(and at least one must be left to generate)",
            hint=runtime.context_hint,
        )
    grammar = None
    if config.output_constraint is not None:
        if config.ignore_eos:
            # once the grammar accepts it allows only end-of-generation tokens: with those masked
            # too, llama.cpp's grammar would reject whatever token is drawn and abort the process
            raise UnsupportedError(
                f"ignore_eos cannot be combined with {config.output_constraint.kind} output on phi3-llamacpp",
                hint="drop ignore_eos (the constrained output ends when the grammar is complete)",
            )
        grammar = gbnf(config.output_constraint)
        lc = runtime.llama_cpp
        sampler = _grammar_sampler(runtime, grammar)
        if not sampler:
            raise UnsupportedError(
                f"llama.cpp could not parse the grammar of this {config.output_constraint.kind} constraint "
                f"({config.output_constraint.spec!r}; its log above says where)",
                hint="simplify the pattern (e.g. [0-9] for \\d, no lookaround)",
            )
        lc.llama_sampler_free(sampler)
    return _stream(runtime, ids, config, grammar)


def _grammar_sampler(runtime: Runtime, grammar: str) -> Any:
    """llama.cpp's grammar sampler for ``grammar`` (root rule ``root``); NULL if it does not parse."""
    lc = runtime.llama_cpp
    vocab = lc.llama_model_get_vocab(runtime.llama.model)
    return lc.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")


def build_sampler(
    runtime: Runtime,
    config: GenerationConfig,
    n_vocab: int,
    prompt_ids: Sequence[int] = (),
    grammar: str | None = None,
) -> Any:
    """The llama.cpp sampler chain for ``config`` (the caller frees it); the penalties sampler, if
    any, is primed with the prompt tokens (never the grammar: it would reject them)."""
    lc = runtime.llama_cpp
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if config.ignore_eos and runtime.eos_ids:
        biases = (lc.llama_logit_bias * len(runtime.eos_ids))()
        for slot, token in zip(biases, sorted(runtime.eos_ids)):
            slot.token, slot.bias = token, float("-inf")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(runtime.eos_ids), biases))
    if grammar is not None:
        sampler = _grammar_sampler(runtime, grammar)
        if not sampler:  # parsed once already in generate(); this is a guard, not a path
            lc.llama_sampler_free(chain)
            raise BackendError("llama.cpp refused a grammar it had accepted")
        lc.llama_sampler_chain_add(chain, sampler)
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
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def _decode(runtime: Runtime, ctx: Any, tokens: Sequence[int]) -> None:
    lc = runtime.llama_cpp
    for start in range(0, len(tokens), runtime.n_batch):
        part = tokens[start : start + runtime.n_batch]
        array = (lc.llama_token * len(part))(*part)
        code = lc.llama_decode(ctx, lc.llama_batch_get_one(array, len(part)))
        if code != 0:
            raise BackendError(f"llama_decode failed with code {code} at {start + len(part)} tokens")


def _stream(runtime: Runtime, ids: list[int], config: GenerationConfig, grammar: str | None) -> Iterator[Chunk]:
    lc = runtime.llama_cpp
    llama = runtime.llama
    ctx = llama.ctx
    vocab = lc.llama_model_get_vocab(llama.model)
    n_vocab = int(lc.llama_vocab_n_tokens(vocab))
    chain = build_sampler(runtime, config, n_vocab, ids, grammar)
    piece = ctypes.create_string_buffer(256)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    budget = min(config.max_new_tokens, runtime.context_length - len(ids))
    produced = 0
    try:
        llama.reset()  # the Llama object's own prefix bookkeeping: this loop owns the context now
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        _decode(runtime, ctx, ids)
        while produced < budget:
            token = int(lc.llama_sampler_sample(chain, ctx, -1))
            if token in runtime.eos_ids and not config.ignore_eos:
                break
            if grammar is not None and lc.llama_vocab_is_eog(vocab, token):
                break
            produced += 1
            size = lc.llama_token_to_piece(vocab, token, piece, len(piece), 0, False)
            text = utf8.decode(piece.raw[: max(size, 0)])
            yield Chunk(text, (token,), prompt_tokens=len(ids) if produced == 1 else None)
            if produced < budget:
                _decode(runtime, ctx, (token,))
        tail = utf8.decode(b"", final=True)
        if produced == 0 or tail:
            yield Chunk(tail, (), prompt_tokens=len(ids) if produced == 0 else None)
    finally:
        lc.llama_sampler_free(chain)


__all__ = ["build_sampler", "encode", "generate"]
