"""``phi3_load``, the chat template and ``phi3_unload``: one ``llama_cpp.Llama`` per session.

Context length, the contract's one rule: the artifact supports ``max_position_embeddings``; this
session allocates ``n_ctx`` tokens of KV cache (default: the model's context, capped at
:data:`DEFAULT_CONTEXT` so a 128k model does not try to allocate ~48 GB) and enforces that.
``n_ctx=N`` raises it up to the model's; when llama.cpp cannot allocate it the error names the KV
memory it needs. llama.cpp rounds the allocation up to a multiple of 256 (llama-cpp-python 0.3.36);
phi3 still enforces what was asked, never more than the model's context.

Sliding window (Phi-3-mini-4k / medium-4k, window 2047): llama.cpp runs Phi-3 with full attention
(ggml-org/llama.cpp#13676), which equals the sliding window only while the whole sequence fits in
the window. So such a session's context stops at the window by default: every answer it gives is
the model's. ``full_attention=true`` opts into the rest of the context with llama.cpp's full
attention (what llama.cpp and Ollama users get; it differs from transformers past the window).

LongRoPE: llama.cpp picks the short or long factor table per *context*, by the allocated size
(``n_ctx > original_max_position_embeddings`` -> long factors for every position), where
transformers picks per sequence length. Keeping the default context at or below the original
length (4096 on the real 128k models) keeps the short factors, as transformers uses them there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, ConfigError
from phi3.types import ChatMessage, LoadRequest, OptionSpec, SessionHandle
from phi3_llamacpp import GGUF_NAME, METADATA_NAME
from phi3_llamacpp.devices import import_runtime, resolve
from phi3_llamacpp.grammar import Guide

DEFAULT_CONTEXT = 4096
LOAD_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("n_ctx", "int", "tokens of KV cache this session holds (up to the model's context)", min=1),
    OptionSpec("n_threads", "int", "CPU threads (default: the CPUs this process may run on)", min=1),
    OptionSpec("n_gpu_layers", "int", "layers offloaded to the GPU (default: all on a GPU device)", min=0),
    OptionSpec("flash_attn", "bool", "llama.cpp's flash attention", default=False),
    OptionSpec(
        "full_attention", "bool", "use the context past a sliding window (llama.cpp's full attention)", default=False
    ),
)
"""The load options, checked by phi3 (typed) before :func:`load` sees them."""
LLAMA_PAD = 256
"""llama.cpp pads the KV cache to a multiple of this (llama-context.cpp, llama-cpp-python 0.3.36)."""


@dataclass
class Runtime:
    """The live model and the facts ``phi3_generate`` needs."""

    llama: Any
    llama_cpp: Any
    context_length: int
    eos_ids: frozenset[int]
    n_batch: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    details: dict[str, Any] = field(default_factory=dict)
    context_hint: str = "shorten the prompt, or load with a larger n_ctx (up to the model's context)"
    """What a too-long prompt's error suggests (a window-limited session names full_attention)."""
    guide: Any = None
    """The session's :class:`phi3_llamacpp.grammar.Guide` (structured output; built lazily)."""
    adapters: dict[str, Any] = field(default_factory=dict)
    """LoRA adapters loaded on the model, by name (:func:`phi3_llamacpp.lora.load_adapters`)."""
    device: str = "CPU"
    """The device really used (its phi3 name)."""
    model_context: int = 0
    """The model's own context (``context_length`` is what this session holds)."""
    strip_first_space: bool = False
    """The answer's first piece loses one leading space, as the checkpoint's tokenizer decodes it: a
    SentencePiece vocabulary (Phi-3's ``▁I`` -> ``I``; tokenizer.json's ``Strip`` decoder step), not a
    byte-level BPE one (Phi-4-mini's ``ĠI`` stays `` I``)."""


def _cpus() -> int:
    """CPUs this process may run on (llama-cpp-python's own default is half of os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def kv_bytes(config: Mapping[str, Any], n_ctx: int) -> int:
    """f16 K and V for ``n_ctx`` tokens: what raising ``n_ctx`` costs in memory."""
    heads = int(config.get("num_attention_heads") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or 0) // heads)
    layers = int(config.get("num_hidden_layers") or 0)
    return 2 * 2 * layers * kv_heads * head_dim * n_ctx


def _model_config(llama: Any) -> dict[str, Any]:
    meta: Mapping[str, str] = llama.metadata
    arch = meta.get("general.architecture", "phi3")

    def get(key: str) -> int:
        return int(meta.get(f"{arch}.{key}", "0") or 0)

    heads = get("attention.head_count")
    return {
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv") or heads,
        "hidden_size": get("embedding_length"),
        "num_hidden_layers": get("block_count"),
    }


@dataclass(frozen=True)
class _Plan:
    """What the session allocates, from the (phi3-checked) options and the artifact's metadata."""

    n_ctx: int
    model_context: int
    window_limited: bool
    window: int
    n_threads: int
    gpu_layers: int
    flash_attn: bool


def _plan(request: LoadRequest, metadata: Mapping[str, Any], device_index: int) -> _Plan:
    """The context rule of the module doc, and the layers on the GPU; refusals before any allocation."""
    options = request.options  # typed and range-checked by phi3 (LOAD_OPTIONS)
    n_ctx_option: int | None = options.get("n_ctx")
    n_gpu_layers: int | None = options.get("n_gpu_layers")
    model_context = request.artifact.context_length or int(metadata.get("context_length") or DEFAULT_CONTEXT)
    if n_ctx_option is not None and n_ctx_option > model_context:
        raise ConfigError(
            f"n_ctx={n_ctx_option} is more than this model's context ({model_context} tokens)",
            hint=f"use n_ctx <= {model_context}",
        )
    n_ctx = n_ctx_option or min(model_context, DEFAULT_CONTEXT)
    window = int(metadata.get("sliding_window") or 0)
    window_limited = 0 < window < model_context and not options.get("full_attention", False)
    if window_limited and n_ctx > window:
        if n_ctx_option is not None:
            raise ConfigError(
                f"n_ctx={n_ctx_option} passes this model's {window}-token sliding window, which llama.cpp does "
                "not apply (it attends to the whole context): answers past the window would not be the model's",
                hint=f"use n_ctx <= {window}, or add full_attention=true to accept llama.cpp's full attention",
            )
        n_ctx = window
    if device_index < 0 and n_gpu_layers:
        raise ConfigError("n_gpu_layers needs a GPU device", hint="pass device='GPU', or drop n_gpu_layers")
    gpu_layers = 0 if device_index < 0 else (-1 if n_gpu_layers is None else n_gpu_layers)
    return _Plan(
        n_ctx=n_ctx,
        model_context=model_context,
        window_limited=window_limited,
        window=window,
        n_threads=options.get("n_threads") or _cpus(),
        gpu_layers=gpu_layers,
        flash_attn=bool(options.get("flash_attn", False)),
    )


def _open_llama(llama_cpp: Any, gguf: Path, plan: _Plan, n_batch: int, device: Any) -> Any:
    """``llama_cpp.Llama`` for ``plan``; a failure names the KV memory the context needs."""
    try:
        return llama_cpp.Llama(
            str(gguf),
            n_ctx=plan.n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=plan.n_threads,
            n_threads_batch=plan.n_threads,
            n_gpu_layers=plan.gpu_layers,
            main_gpu=max(device.index, 0),
            flash_attn=plan.flash_attn,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        needed = None
        try:
            probe = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
            needed = kv_bytes(_model_config(probe), plan.n_ctx)
            probe.close()
        except Exception:  # only enriches the message below
            needed = None
        memory = f" (its KV cache alone needs ~{needed / 2**30:.1f} GiB)" if needed else ""
        raise ArtifactError(
            f"llama.cpp could not open {gguf.name} with a {plan.n_ctx}-token context on {device.info.name}{memory}: "
            f"{exc}",
            hint="pass a smaller n_ctx, free memory, or rebuild the artifact",
        ) from exc


def _with_adapters(llama_cpp: Any, llama: Any, request: LoadRequest) -> dict[str, Any]:
    """Every LoRA adapter of the request loaded on the model (the model is closed if one fails)."""
    if not request.adapters:
        return {}
    from phi3_llamacpp.lora import load_adapters

    try:
        return load_adapters(llama_cpp, llama, request.adapters)
    except BaseException:
        llama.close()
        raise


def load(request: LoadRequest) -> Runtime:
    """Open the artifact's GGUF for ``request`` (the session's context per the module doc)."""
    device = resolve(request.device)
    folder = request.artifact.path
    gguf = folder / GGUF_NAME
    meta_file = folder / METADATA_NAME
    if not gguf.is_file() or not meta_file.is_file():
        raise ArtifactError(
            f"{folder} has no {GGUF_NAME} / {METADATA_NAME}", hint="rebuild it: phi3 cache prune, then load again"
        )
    metadata = json.loads(meta_file.read_text(encoding="utf-8"))
    plan = _plan(request, metadata, device.index)
    llama_cpp = import_runtime()
    n_batch = min(512, -(-plan.n_ctx // LLAMA_PAD) * LLAMA_PAD)
    llama = _open_llama(llama_cpp, gguf, plan, n_batch, device)
    loaded = _with_adapters(llama_cpp, llama, request)
    eos = set(int(i) for i in metadata.get("eos_token_ids", []))
    eos.add(int(llama.token_eos()))
    runtime = Runtime(
        llama=llama,
        llama_cpp=llama_cpp,
        context_length=min(plan.n_ctx, plan.model_context),
        eos_ids=frozenset(i for i in eos if i >= 0),
        n_batch=n_batch,
        chat_template=llama.metadata.get("tokenizer.chat_template"),
        bos_text=_token_text(llama, llama.token_bos()),
        eos_text=_token_text(llama, llama.token_eos()),
        adapters=loaded,
        device=device.info.name,
        model_context=plan.model_context,
        strip_first_space=llama_cpp.llama_vocab_type(llama_cpp.llama_model_get_vocab(llama.model))
        == llama_cpp.LLAMA_VOCAB_TYPE_SPM,
    )
    if plan.window_limited:
        runtime.context_hint = (
            f"shorten the prompt: this session stops at the model's {plan.window}-token sliding window, which "
            "llama.cpp does not apply; full_attention=true uses the whole context with llama.cpp's full "
            "attention (answers past the window then differ from the model's)"
        )
    runtime.guide = Guide(llama_cpp.llama_model_get_vocab(llama.model), runtime.eos_ids)
    runtime.details = _details(runtime, metadata, plan, device)
    return runtime


def _details(runtime: Runtime, metadata: Mapping[str, Any], plan: _Plan, device: Any) -> dict[str, Any]:
    """What ``phi3 info`` / the result's details show of this session."""
    allocated = int(runtime.llama.n_ctx())
    details: dict[str, Any] = {
        "quant": metadata.get("quant"),
        "n_ctx_allocated": allocated,
        "n_threads": plan.n_threads,
        "n_gpu_layers": plan.gpu_layers,
        "ggml_device": device.ggml_name,
        "rope_factors": _rope_factors(metadata, allocated),
    }
    if plan.window_limited:
        details["sliding_window"] = f"enforced: the context stops at the {plan.window}-token window"
    elif 0 < plan.window < plan.model_context:
        details["sliding_window"] = "ignored (full_attention=true): llama.cpp attends to the whole context"
    if runtime.adapters:
        details["lora_adapters"] = ", ".join(runtime.adapters)
    return details


def _rope_factors(metadata: Mapping[str, Any], allocated: int) -> str | None:
    if not metadata.get("longrope"):
        return None
    original = int(metadata.get("original_max_position_embeddings") or 0)
    return "long (allocated context > original)" if allocated > original else "short (context <= original)"


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")


def apply_chat_template(runtime: Runtime, messages: Sequence[ChatMessage]) -> str:
    """The GGUF's own template (written by the converter from the checkpoint), rendered by
    llama-cpp-python's ``Jinja2ChatFormatter`` (transformers' Jinja settings)."""
    live(runtime)
    if not runtime.chat_template:
        raise ConfigError("this model has no chat template", hint="use generate() with a formatted prompt")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        runtime.chat_template, runtime.eos_text, runtime.bos_text, add_generation_prompt=True
    )
    return str(formatter(messages=[dict(m) for m in messages]).prompt)  # type: ignore[misc]


def live(runtime: Runtime) -> Runtime:
    """``runtime``, or a ConfigError once it has been closed."""
    if runtime.llama is None:
        raise ConfigError("this model has been unloaded; load it again")
    return runtime


def _runtime(session: SessionHandle) -> Runtime:
    """The live Runtime of a llamacpp session (its engine's; see :mod:`phi3_llamacpp.engine`)."""
    runtime = getattr(session.native, "runtime", session.native)
    if not isinstance(runtime, Runtime):
        raise ConfigError("this is not a llamacpp session")
    return live(runtime)


def close(runtime: Runtime) -> None:
    """Free the model now (its LoRA adapters go with it, see llama.h); a second call does nothing."""
    if runtime.llama is not None:
        runtime.llama.close()
        runtime.llama = None


__all__ = ["DEFAULT_CONTEXT", "LOAD_OPTIONS", "Runtime", "apply_chat_template", "close", "kv_bytes", "live", "load"]
