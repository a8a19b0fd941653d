"""phi3 backend for llama-cpp-python, engine shape (docs/writing-a-backend.md); the GGUF converter is convert.py."""

import codecs
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import phi3
from phi3.engine_hooks import engine_session, phi3_apply_chat_template, phi3_generate, phi3_unload
from phi3.integrations.transformers_generation import sampling_seed
from phi3.probing import installed_versions, module_available
from phi3.types import OptionSpec

NAME, GGUF = "llama-cpp-python", "model.gguf"


@phi3.hookimpl
def phi3_backend_info() -> phi3.BackendInfo:
    ready = module_available("llama_cpp") and module_available("gguf")
    return phi3.BackendInfo(
        name=NAME,
        description="llama.cpp through llama-cpp-python: GGUF on the CPU",
        engines=(phi3.EngineInfo("llama.cpp", artifact_format="gguf"),),
        devices=(phi3.DeviceInfo("CPU", "cpu"),) if ready else (),
        precisions=("int4", "int8", "fp16", "fp32"),
        status=phi3.BackendStatus.AVAILABLE if ready else phi3.BackendStatus.MISSING_DEPENDENCY,
        detail="" if ready else "pip install llama-cpp-python gguf",
        library_versions=installed_versions("llama-cpp-python", "gguf"),
        options=(  # checked and converted by phi3 before any hook sees them
            OptionSpec("n_ctx", "int", "tokens of KV cache to allocate (default: the model's context)", min=16),
            OptionSpec("n_threads", "int", "CPU threads (default: llama.cpp's choice)", min=1),
        ),
        sampling=("min_p",),
    )


@phi3.hookimpl
def phi3_quantize(request: phi3.QuantizeRequest, output_dir: Path, progress: phi3.Progress) -> Mapping[str, Any]:
    from phi3_llama_cpp_python.convert import convert

    progress("converting to GGUF", 0, 1)
    return convert(request.source.path, output_dir / GGUF, request.precision)


@phi3.hookimpl
def phi3_load(request: phi3.LoadRequest) -> phi3.SessionHandle:
    return engine_session(NAME, LlamaEngine(request))


class LlamaEngine:
    """One ``llama_cpp.Llama``: phi3.engine_hooks forwards generate, the chat template and unload here."""

    name, device = "llama.cpp", "CPU"

    def __init__(self, request: phi3.LoadRequest) -> None:
        import llama_cpp

        model_context = request.artifact.context_length or 4096
        n_ctx, threads = request.options.get("n_ctx", model_context), request.options.get("n_threads")
        if n_ctx > model_context:
            raise phi3.ConfigError(f"n_ctx={n_ctx} is over this model's context", hint=f"use n_ctx <= {model_context}")
        self.lc, path = llama_cpp, str(request.artifact.path / GGUF)
        llama = self.llama = llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=threads, verbose=False)
        # llama.cpp attends past Phi-3's sliding window: a session stops at the window
        self.context_length = min(n_ctx, int(llama.metadata.get("phi3.attention.sliding_window", 0)) or n_ctx)
        self.details: Mapping[str, Any] = {"n_ctx": n_ctx, "gguf_type": request.artifact.manifest.get("gguf_type")}
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.eog = [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        eos_bos = [llama.detokenize([t], special=True).decode() for t in (llama.token_eos(), llama.token_bos())]
        template = llama.metadata["tokenizer.chat_template"]  # the checkpoint's, written by the converter
        self.template = llama_cpp.llama_chat_format.Jinja2ChatFormatter(template, *eos_bos, add_generation_prompt=True)

    def generate(self, prompt: str, config: phi3.GenerationConfig) -> Iterator[phi3.Chunk]:
        ids = self.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(ids) >= self.context_length:
            raise phi3.PromptTooLongError(f"the prompt has {len(ids)} tokens; this session holds {self.context_length}")
        return self._stream(ids, config)  # checked now; decoded as phi3 iterates (and stopped when it closes)

    def _stream(self, ids: list[int], config: phi3.GenerationConfig) -> Iterator[phi3.Chunk]:
        sampler, utf8 = self._sampler(config, ids), codecs.getincrementaldecoder("utf-8")("replace")
        try:
            self.llama.reset()
            self.llama.eval(ids)  # the prefill
            yield phi3.Chunk("", (), prompt_tokens=len(ids))
            for n in range(min(config.max_new_tokens, self.context_length - len(ids))):
                token = self.lc.llama_sampler_sample(sampler, self.llama.ctx, -1)
                if token in self.eog and not config.ignore_eos:
                    break
                piece = self.llama.detokenize([token])  # the text starts without the first word's space, as in HF
                yield phi3.Chunk(utf8.decode(piece[1:] if n == 0 and piece[:1] == b" " else piece), (token,))
                self.llama.eval([token])
            yield phi3.Chunk(utf8.decode(b"", final=True))  # a character left incomplete at the end
        finally:
            self.lc.llama_sampler_free(sampler)

    def _sampler(self, config: phi3.GenerationConfig, prompt: Sequence[int]) -> Any:
        # phi3's order: EOS ban, repetition penalty, then greedy or temperature, top-k, top-p, min-p, seeded draw
        lc, eog, n_vocab = self.lc, self.eog if config.ignore_eos else [], self.llama.n_vocab()
        bias = (lc.llama_logit_bias * len(eog))(*(lc.llama_logit_bias(t, float("-inf")) for t in eog))
        penalties = lc.llama_sampler_init_penalties(n_vocab, self.context_length, config.repetition_penalty, 0, 0)
        for token in prompt:  # the penalty covers prompt and output, as transformers' does
            lc.llama_sampler_accept(penalties, token)
        steps = [lc.llama_sampler_init_logit_bias(n_vocab, len(eog), bias), penalties]
        if config.do_sample:
            steps += [lc.llama_sampler_init_temp(config.temperature), lc.llama_sampler_init_top_k(config.top_k)]
            steps += [lc.llama_sampler_init_top_p(config.top_p, 1), lc.llama_sampler_init_min_p(config.min_p, 1)]
            steps.append(lc.llama_sampler_init_dist(sampling_seed(config)))
        else:
            steps.append(lc.llama_sampler_init_greedy())
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        for step in steps:
            lc.llama_sampler_chain_add(chain, step)
        return chain

    def apply_chat_template(self, messages: Sequence[phi3.ChatMessage]) -> str:
        return str(self.template(messages=[dict(m) for m in messages]).prompt)

    def close(self) -> None:
        self.llama.close()


__all__ = ["LlamaEngine", "phi3_apply_chat_template", "phi3_generate", "phi3_unload"]
