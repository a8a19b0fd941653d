"""The llama-cpp-python backend written against phi3's original hook contract: every hook by hand.

This is how a third-party plugin written before the engine shape looks (docs/writing-a-backend.md,
"Migrating from hand-written hooks", shows what each part becomes). The hook contract stays supported
through the 0.x series, and phi3's tests run this example through the conformance suite so that it
keeps working: options are a list of names the plugin checks itself, the session's native object is
the plugin's own, and ``phi3_generate`` / ``phi3_apply_chat_template`` / ``phi3_unload`` are written
out. The GGUF converter is the engine-shape example's (``phi3_llama_cpp_python.convert``).
"""

from __future__ import annotations

import codecs
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3 import hookimpl
from phi3.errors import ConfigError, PromptTooLongError
from phi3.generation_config import GenerationConfig
from phi3.probing import installed_versions, module_available
from phi3.types import (
    BackendInfo,
    BackendStatus,
    ChatMessage,
    Chunk,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SessionHandle,
)

NAME = "llama-cpp-python-hooks"
GGUF = "model.gguf"
LOAD_OPTIONS = ("n_ctx", "n_threads")


@hookimpl
def phi3_backend_info() -> BackendInfo:
    ready = module_available("llama_cpp") and module_available("gguf")
    return BackendInfo(
        name=NAME,
        description="llama.cpp through llama-cpp-python: GGUF on the CPU (hand-written hooks)",
        engines=(EngineInfo("llama.cpp", artifact_format="gguf"),),
        devices=(DeviceInfo("CPU", "cpu"),) if ready else (),
        precisions=("int4", "int8", "fp16", "fp32"),
        status=BackendStatus.AVAILABLE if ready else BackendStatus.MISSING_DEPENDENCY,
        detail="" if ready else "pip install llama-cpp-python gguf",
        library_versions=installed_versions("llama-cpp-python", "gguf"),
        load_options=LOAD_OPTIONS,
        sampling=("min_p",),
    )


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    from phi3_llama_cpp_python.convert import convert

    progress("converting to GGUF", 0, 1)
    return convert(request.source.path, output_dir / GGUF, request.precision)


def _positive_int(options: Mapping[str, Any], name: str) -> int | None:
    """A whole-number option (``-O n_ctx=512`` arrives as the text "512")."""
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number > 0, got {value!r}", hint=f"e.g. -O {name}=512")
    return value


@dataclass
class Runtime:
    """What ``phi3_load`` keeps in ``SessionHandle.native`` for the other hooks."""

    llama: Any
    llama_cpp: Any
    context_length: int
    n_vocab: int
    eog: list[int]


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    import llama_cpp

    model_context = request.artifact.context_length or 4096
    n_ctx = _positive_int(request.options, "n_ctx") or model_context
    if n_ctx > model_context:
        raise ConfigError(f"n_ctx={n_ctx} is more than the model's context", hint=f"use n_ctx <= {model_context}")
    threads = _positive_int(request.options, "n_threads")
    llama = llama_cpp.Llama(str(request.artifact.path / GGUF), n_ctx=n_ctx, n_threads=threads, verbose=False)
    window = int(llama.metadata.get("phi3.attention.sliding_window", "0"))
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    context = min(n_ctx, window or n_ctx)  # llama.cpp attends past Phi-3's sliding window: stop at it
    runtime = Runtime(llama, llama_cpp, context, n_vocab, eog)
    return SessionHandle(NAME, request.engine, "CPU", runtime, context_length=context, details={"n_ctx": n_ctx})


@hookimpl
def phi3_generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    runtime: Runtime = session.native
    ids = runtime.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    if len(ids) >= runtime.context_length:
        raise PromptTooLongError(f"the prompt has {len(ids)} tokens; this session holds {runtime.context_length}")
    return _stream(runtime, ids, config)


def _stream(runtime: Runtime, ids: list[int], config: GenerationConfig) -> Iterator[Chunk]:
    lc, llama = runtime.llama_cpp, runtime.llama
    sampler = _sampler(runtime, config, ids)
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        llama.reset()
        llama.eval(ids)  # the prefill
        yield Chunk("", (), prompt_tokens=len(ids))
        for n in range(min(config.max_new_tokens, runtime.context_length - len(ids))):
            token = lc.llama_sampler_sample(sampler, llama.ctx, -1)
            if token in runtime.eog and not config.ignore_eos:
                break
            piece = llama.detokenize([token])  # the text starts without the first word's space, as in HF
            yield Chunk(utf8.decode(piece[1:] if n == 0 and piece[:1] == b" " else piece), (token,))
            llama.eval([token])
        yield Chunk(utf8.decode(b"", final=True))  # a character left incomplete at the end
    finally:
        lc.llama_sampler_free(sampler)


def _sampler(runtime: Runtime, config: GenerationConfig, prompt: Sequence[int]) -> Any:
    """EOS ban, repetition penalty over prompt and output, then greedy or temperature -> top-k ->
    top-p -> min-p -> a seeded draw (phi3's documented order)."""
    lc = runtime.llama_cpp
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if config.ignore_eos:
        biases = (lc.llama_logit_bias * len(runtime.eog))(*(lc.llama_logit_bias(t, float("-inf")) for t in runtime.eog))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(runtime.n_vocab, len(runtime.eog), biases))
    penalties = lc.llama_sampler_init_penalties(
        runtime.n_vocab, runtime.context_length, config.repetition_penalty, 0, 0
    )
    for token in prompt:
        lc.llama_sampler_accept(penalties, token)
    lc.llama_sampler_chain_add(chain, penalties)
    if not config.do_sample:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(config.temperature))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(config.top_k))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(config.top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(config.min_p, 1))
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


@hookimpl
def phi3_apply_chat_template(session: SessionHandle, messages: Sequence[ChatMessage]) -> str:
    """The GGUF's own template; the original one-argument signature (no ``tools``)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llama = session.native.llama
    bos, eos = (llama.detokenize([t], special=True).decode() for t in (llama.token_bos(), llama.token_eos()))
    template = Jinja2ChatFormatter(llama.metadata["tokenizer.chat_template"], eos, bos, add_generation_prompt=True)
    return str(template(messages=[dict(m) for m in messages]).prompt)


@hookimpl
def phi3_unload(session: SessionHandle) -> None:
    session.native.llama.close()
