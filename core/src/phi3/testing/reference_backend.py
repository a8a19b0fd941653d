"""A real backend on plain transformers + PyTorch (CPU): phi3-core's own test subject.

It is not an accelerator backend and is not registered by default. It exists so that phi3-core
can test its whole contract (cache, CLI, streaming, stop strings, kills mid-quantization) against a
real model without any vendor stack, and so backend authors can read a complete, short
implementation of every hook. Register it with::

    import phi3.plugins
    from phi3.testing import reference_backend
    phi3.plugins.register(reference_backend, "reference")

The artifact option ``pause_after_write`` (seconds) sleeps after the weights are written and
before ``phi3_quantize`` returns: tests use it to kill a quantization at a known point.

LoRA adapters are applied for real with peft: ``phi3_convert_adapter`` writes the canonical peft
folder (:func:`phi3.adapters.write_peft_folder`, so llama-style q/k/v adapters arrive fused), and the
session is a ``PeftModel`` holding every adapter by name; each generation activates the one its config
names (``set_adapter``) or none (``disable_adapter``), so nothing carries over between requests.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.adapters import LoraAdapter, PreparedAdapter, write_peft_folder
from phi3.errors import AdapterError, ArtifactError, DeviceNotFoundError, PromptTooLongError
from phi3.generation_config import GenerationConfig
from phi3.hookspecs import hookimpl
from phi3.integrations import transformers_structured
from phi3.probing import installed_versions, module_available
from phi3.types import (
    Artifact,
    BackendInfo,
    BackendStatus,
    ChatMessage,
    Chunk,
    DeviceInfo,
    EngineInfo,
    LoadRequest,
    OptionSpec,
    Progress,
    QuantizeRequest,
    SessionHandle,
)
from phi3.vendor_compat import hide_broken_torchvision

NAME = "reference"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
CPU = DeviceInfo("cpu", "cpu", "PyTorch CPU")


@hookimpl
def phi3_backend_info() -> BackendInfo:
    ready = module_available("torch") and module_available("transformers")
    return BackendInfo(
        name=NAME,
        description="transformers + PyTorch on the CPU (reference for tests; no quantization)",
        engines=(
            EngineInfo(
                "transformers",
                "Hugging Face transformers generate()",
                ready,
                "" if ready else 'pip install "phi3-core[testing]"',
                "hf-safetensors",
            ),
        ),
        devices=(CPU,) if ready else (),
        precisions=tuple(DTYPES),
        status=BackendStatus.AVAILABLE if ready else BackendStatus.MISSING_DEPENDENCY,
        detail="" if ready else 'needs torch and transformers: pip install "phi3-core[testing]"',
        library_versions=installed_versions("torch", "transformers"),
        options=(
            OptionSpec(
                "pause_after_write",
                "float",
                "seconds to wait after writing the artifact (tests of concurrent builds)",
                default=0.0,
                min=0,
                artifact=True,
            ),
        ),
        priority=-100,
        # enforced by a logits processor (llguidance) when phi3-core[structured] is installed
        structured_output=transformers_structured.enforced_kinds() if ready else (),
        sampling=("min_p",),  # transformers' MinPLogitsWarper
        adapters=ready and module_available("peft"),  # peft applies them
    )


@hookimpl
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    hide_broken_torchvision()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pause = float(request.options.get("pause_after_write", 0.0))  # checked by phi3 against its OptionSpec
    progress("loading weights", 0, 2)
    model = AutoModelForCausalLM.from_pretrained(
        request.source.path,
        dtype=getattr(torch, DTYPES[request.precision]),
        trust_remote_code=request.trust_remote_code,
    )
    progress("writing weights", 1, 2)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(request.source.path).save_pretrained(output_dir)
    progress("done", 2, 2)
    if pause:
        time.sleep(float(pause))
    return {"context_length": int(model.config.max_position_embeddings)}


@hookimpl
def phi3_load(request: LoadRequest) -> SessionHandle:
    if request.device.lower() != "cpu":
        raise DeviceNotFoundError(
            f"device {request.device!r} is not available to backend {NAME}", hint="devices present: cpu"
        )
    hide_broken_torchvision()  # a cached artifact skips phi3_quantize, which used to be the only caller
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            request.artifact.path, dtype=getattr(torch, DTYPES[request.artifact.precision])
        )
        tokenizer = AutoTokenizer.from_pretrained(request.artifact.path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"cannot read artifact {request.artifact.path}: {exc}", hint="delete it with phi3 cache rm and run again"
        ) from None
    model.eval()
    context = int(model.config.max_position_embeddings)
    if request.adapters:
        model = _with_adapters(model, request.adapters)
    return SessionHandle(NAME, "transformers", "cpu", (model, tokenizer), context_length=context)


@hookimpl
def phi3_convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress
) -> Mapping[str, Any]:
    progress(f"writing adapter {adapter.name!r} as a canonical peft folder")
    write_peft_folder(adapter, output_dir)
    return {"rank": adapter.rank}


def _with_adapters(model: Any, adapters: Mapping[str, PreparedAdapter]) -> Any:
    """``model`` as a PeftModel holding every adapter under its name (the base stays unmerged)."""
    hide_broken_torchvision()  # `import peft` fails on a broken torchvision (operator torchvision::nms)
    import peft

    peft_model: Any = None
    for name, prepared in adapters.items():
        if prepared.path is None:  # phi3 always converts for this backend (it has the hook)
            raise AdapterError(f"adapter {name!r} was not converted for backend {NAME}")
        if peft_model is None:
            peft_model = peft.PeftModel.from_pretrained(model, str(prepared.path), adapter_name=name)
        else:
            peft_model.load_adapter(str(prepared.path), adapter_name=name)
    peft_model.eval()
    return peft_model


def _adapter_scope(model: Any, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
    """Within it, ``model`` computes with exactly ``adapter`` (None: the base model)."""
    import peft

    if not isinstance(model, peft.PeftModel):
        return contextlib.nullcontext()
    if adapter is None:
        return model.disable_adapter()  # type: ignore[no-any-return]
    model.set_adapter(adapter)
    return contextlib.nullcontext()


@hookimpl
def phi3_apply_chat_template(session: SessionHandle, messages: Sequence[ChatMessage]) -> str:
    _, tokenizer = session.native
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))


@hookimpl
def phi3_generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    model, tokenizer = session.native
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    if session.context_length is not None and ids.shape[1] + 1 > session.context_length:
        raise PromptTooLongError(
            f"the prompt has {ids.shape[1]} tokens; the model's context is {session.context_length}",
            hint="shorten the prompt",
        )
    processors = []
    constraint = config.output_constraint
    if constraint is not None:  # compiled now: a schema the grammar engine refuses fails before decoding
        processors.append(
            transformers_structured.logits_processor(tokenizer, constraint, eos_token_ids=_eos_ids(model))
        )
    return _stream(model, tokenizer, ids, config, processors)


def _eos_ids(model: Any) -> list[int]:
    eos = model.generation_config.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [])


def _crosses_longrope_switch(model: Any, prompt_tokens: int, max_new_tokens: int) -> bool:
    """Whether this generation starts at or below the LongRoPE switch and goes past it."""
    from phi3.testing.reference import longrope_switch

    switch = longrope_switch(model.config)
    return switch is not None and prompt_tokens <= switch < prompt_tokens + max_new_tokens


def _generate_kwargs(config: GenerationConfig, eos_ids: list[int], *, use_cache: bool = True) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "repetition_penalty": config.repetition_penalty,
        "use_cache": use_cache,
    }
    if config.do_sample:
        kwargs.update(
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k or None, min_p=config.min_p or None
        )
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
    if config.ignore_eos and config.output_constraint is not None:
        # the grammar allows only EOS once the output is complete: keep decoding it, never stop on it
        kwargs["eos_token_id"] = None
    elif config.ignore_eos:
        kwargs["suppress_tokens"] = eos_ids
    return kwargs


def _stream(model: Any, tokenizer: Any, ids: Any, config: GenerationConfig, processors: list[Any]) -> Iterator[Chunk]:
    """Run transformers' generate() in a thread, forwarding each new token as a Chunk."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    tokens: queue.Queue[object] = queue.Queue()
    cancelled = threading.Event()
    done = object()

    class Forward(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() first echoes the prompt
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                tokens.put(int(token))

        def end(self) -> None:
            tokens.put(done)

    class Cancel(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

    eos_ids = _eos_ids(model)
    errors: list[BaseException] = []
    # transformers 5.5.4's Phi3ForCausalLM.prepare_inputs_for_generation drops the KV cache when
    # generation crosses the LongRoPE switch and then feeds a single token, losing the context.
    # Without a cache every step is a full forward, which uses the long factors for the whole
    # sequence once it is past the switch: the right answer (and cheap on the tiny test models).
    use_cache = not _crosses_longrope_switch(model, int(ids.shape[1]), config.max_new_tokens)

    def work() -> None:
        try:
            if config.seed is not None:
                torch.manual_seed(config.seed)
            with torch.inference_mode(), _adapter_scope(model, config.adapter):
                model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    streamer=Forward(),
                    stopping_criteria=StoppingCriteriaList([Cancel()]),
                    logits_processor=LogitsProcessorList(processors),
                    pad_token_id=tokenizer.pad_token_id or eos_ids[0],
                    **_generate_kwargs(config, eos_ids, use_cache=use_cache),
                )
        except BaseException as exc:  # handed to the consumer thread
            errors.append(exc)
            tokens.put(done)

    thread = threading.Thread(target=work, name="phi3-reference-generate", daemon=True)
    thread.start()
    new: list[int] = []
    shown = ""
    first = True
    try:
        while True:
            item = tokens.get()
            if item is done:
                break
            assert isinstance(item, int)
            if not config.ignore_eos and item in eos_ids:
                continue
            new.append(item)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more bytes
                piece = ""
            else:
                piece, shown = text[len(shown) :], text
            yield Chunk(piece, (item,), prompt_tokens=int(ids.shape[1]) if first else None)
            first = False
        if errors:
            raise errors[0]
    finally:
        cancelled.set()
        thread.join()


__all__ = ["NAME"]
