"""The npu-library worker: one process hosting one intel-npu-acceleration-library model.

Started by :class:`phi3_npu.library_engine.LibraryEngine` as ``python -m phi3_npu.library_worker``
with its cwd set to the library's state folder in phi3's cache (why a process: see
:mod:`phi3_npu.library_state`). It does what the guide does::

    model = NPUModelForCausalLM.from_pretrained(path, use_cache=True,
                                                config=CompilerConfig(dtype=int4),
                                                attn_implementation="sdpa", export=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.generate(..., streamer=...)     # transformers' generate, streamed

then serves :mod:`phi3_npu.protocol` requests until ``close`` or until its stdin closes (the parent
died), so it never outlives the process that uses it. Tokenizing, the chat template and
incremental decoding happen here too, so the parent never imports torch or transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from phi3_npu import protocol


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


class Worker:
    """The loaded model plus the request loop."""

    def __init__(self, out: IO[str], args: argparse.Namespace) -> None:
        self.out = out
        self.args = args
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.cancelled: set[int] = set()
        self.model: Any = None
        self.tokenizer: Any = None
        self.eos_ids: list[int] = []
        self.context_length: int | None = None
        self.longrope_switch: int | None = None

    # -- protocol ------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        protocol.send(self.out, message)

    def read_requests(self) -> None:
        """Reader thread: cancellations take effect at once, everything else is queued."""
        for line in sys.stdin:
            if not line.strip():
                continue
            message = protocol.decode(line)
            if message.get("op") == "cancel":
                self.cancelled.add(int(message["id"]))
                continue
            self.requests.put(message)
        self.requests.put({"op": "close"})  # the parent is gone

    # -- load ----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        from phi3_npu import library_state

        library_state.enter(Path(self.args.run_dir), self.args.device)
        import torch
        from intel_npu_acceleration_library import NPUModelForCausalLM, __version__, backend, float16, int4, int8
        from intel_npu_acceleration_library.compiler import CompilerConfig
        from transformers import AutoTokenizer

        npu_available = bool(backend.npu_available())
        if self.args.device == "NPU" and not npu_available:
            from phi3_npu.devices import NO_NPU_HELP

            raise _Refusal("device", "intel-npu-acceleration-library sees no NPU here", NO_NPU_HELP)
        dtype = {"int4": int4, "int8": int8, "float16": float16}[self.args.dtype]
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.args.artifact, trust_remote_code=self.args.trust_remote_code
            )
            model = NPUModelForCausalLM.from_pretrained(
                self.args.artifact,
                use_cache=True,
                config=CompilerConfig(dtype=dtype),
                attn_implementation="sdpa",
                export=False,
                trust_remote_code=self.args.trust_remote_code,
            )
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise _Refusal(
                "artifact",
                f"the npu-library artifact {self.args.artifact} cannot be loaded: {_one_line(exc)}",
                f"delete it (phi3 cache rm {Path(self.args.artifact).name}) and run again to rebuild",
            ) from exc
        self.model = model.eval()
        torch.set_grad_enabled(False)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        context = getattr(self.model.config, "max_position_embeddings", None)
        self.context_length = int(context) if context else None
        from phi3.integrations.transformers_generation import longrope_switch

        self.longrope_switch = longrope_switch(Path(self.args.artifact))
        driver = None
        if npu_available:
            try:
                driver = str(backend.get_driver_version())
            except Exception:
                driver = None
        return {
            "event": "ready",
            "device": self.args.device,
            "npu_available": npu_available,
            "driver_version": driver,
            "library_version": str(__version__).lstrip("v"),
            "dtype": self.args.dtype,
            "context_length": self.context_length,
            "load_s": round(time.perf_counter() - started, 3),
            "pid": os.getpid(),
        }

    # -- requests ------------------------------------------------------------------------------

    def chat_template(self, request: dict[str, Any]) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            self.send(protocol.error_event("config", "this model has no chat template", "send a raw prompt instead"))
            return
        text = self.tokenizer.apply_chat_template(
            request["messages"], tools=request.get("tools"), tokenize=False, add_generation_prompt=True
        )
        self.send({"event": "template", "text": str(text)})

    def generate(self, request: dict[str, Any]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        from phi3.generation_config import GenerationConfig
        from phi3.integrations.detokenize import IncrementalDecoder
        from phi3.integrations.transformers_generation import sampling_seed, to_transformers

        gen_id = int(request["id"])
        config = GenerationConfig.from_options(**request["config"])
        ids = self.tokenizer(request["prompt"], return_tensors="pt").input_ids
        prompt_tokens = int(ids.shape[1])
        context = self.context_length
        if context is not None and prompt_tokens >= context:
            self.send(
                protocol.error_event(
                    "prompt_too_long",
                    f"the prompt is {prompt_tokens} tokens but the model's context is {context} tokens",
                    "shorten the prompt (it must leave room for at least one new token)",
                )
            )
            return
        max_new = config.max_new_tokens if context is None else min(config.max_new_tokens, context - prompt_tokens)
        self.send({"event": "start", "id": gen_id, "prompt_tokens": prompt_tokens, "max_new_tokens": max_new})
        decoder = IncrementalDecoder(lambda batch: str(self.tokenizer.decode(list(batch), skip_special_tokens=True)))
        worker = self
        skip = set() if config.ignore_eos else set(self.eos_ids)

        class Forward(BaseStreamer):  # type: ignore[misc]
            """transformers' streamer: first the prompt (skipped), then each new token."""

            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                new = [int(t) for t in value.reshape(-1).tolist() if int(t) not in skip]
                if new:
                    worker.send({"event": "tokens", "id": gen_id, "ids": new, "text": decoder.push(new)})

            def end(self) -> None:
                return None

        class Cancel(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), gen_id in worker.cancelled, dtype=torch.bool)

        if config.do_sample:
            torch.manual_seed(sampling_seed(config))
        sequence = ids
        for part in self._parts(prompt_tokens, max_new):
            out = self.model.generate(
                sequence,
                attention_mask=torch.ones_like(sequence),
                streamer=Forward(),
                stopping_criteria=StoppingCriteriaList([Cancel()]),
                **to_transformers(config, part, self.eos_ids),
            )
            new_ids = [int(t) for t in out[0, sequence.shape[1] :].tolist()]
            ended = len(new_ids) < part or (not config.ignore_eos and bool(new_ids) and new_ids[-1] in self.eos_ids)
            if ended or gen_id in self.cancelled:
                break
            sequence = out
        rest = decoder.flush()
        if rest:
            self.send({"event": "tokens", "id": gen_id, "ids": [], "text": rest})
        self.cancelled.discard(gen_id)
        self.send({"event": "end", "id": gen_id})

    def _parts(self, prompt_tokens: int, max_new: int) -> list[int]:
        """New tokens per ``generate`` call: two where the generation crosses the LongRoPE switch.

        Workaround for transformers <= 5.23 (this plugin's pin; 5.5.4 in CI), which
        intel-npu-acceleration-library 1.4.0 generates with: Phi3ForCausalLM's
        prepare_inputs_for_generation drops the KV cache where generation crosses
        ``original_max_position_embeddings`` and goes on with one token, losing the context, where a
        full forward (the model's own computation) re-reads the whole sequence with the long factors.
        A second call re-prefills the whole sequence, as phi3-openvino's genai engine does.
        ``test_transformers_generate_still_diverges_at_the_longrope_switch`` (tests/test_library.py)
        turns red when transformers stops.
        """
        switch = self.longrope_switch
        if switch is None or not prompt_tokens <= switch < prompt_tokens + max_new - 1:
            return [max_new]
        first_part = switch - prompt_tokens + 1  # the last token computed from <= switch positions
        return [first_part, max_new - first_part]

    def logits(self, request: dict[str, Any]) -> None:
        """Next-token logits after ``ids`` (fp32 list): how tests compare the library with the reference."""
        import torch

        ids = torch.tensor([[int(i) for i in request["ids"]]], dtype=torch.long)
        values = self.model(ids, use_cache=False).logits[0, -1].float().tolist()
        self.send({"event": "logits", "values": values})

    def serve(self) -> None:
        while True:
            request = self.requests.get()
            op = request.get("op")
            if op == "close":
                return
            try:
                if op == "generate":
                    self.generate(request)
                elif op == "chat_template":
                    self.chat_template(request)
                elif op == "logits":
                    self.logits(request)
                else:
                    self.send(protocol.error_event("internal", f"unknown request {op!r}"))
            except Exception as exc:
                traceback.print_exc()
                self.send(protocol.error_event("internal", f"intel-npu-acceleration-library failed: {_one_line(exc)}"))


class _Refusal(Exception):
    """A load failure the user can act on, sent as an error event of ``kind``."""

    def __init__(self, kind: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends generation (generation config, model config, tokenizer), in a stable order."""
    found: list[int] = []
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        for value in source if isinstance(source, (list, tuple)) else [source]:
            if value is not None and int(value) not in found:
                found.append(int(value))
    return found


def _protocol_stream() -> IO[str]:
    """Keep the real stdout for the protocol and point fd 1 (print, C++ output) at stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi3_npu.library_worker")
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--dtype", required=True, choices=("int4", "int8", "float16"))
    parser.add_argument("--device", required=True, choices=("NPU", "CPU"))
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    out = _protocol_stream()
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # the cwd is phi3's state folder, not a source of modules
    import warnings

    warnings.simplefilter("ignore")  # the library and neural-compressor warn on every import
    worker = Worker(out, args)
    try:
        ready = worker.load()
    except _Refusal as exc:
        protocol.send(out, protocol.error_event(exc.kind, exc.message, exc.hint))
        return 1
    except Exception as exc:
        traceback.print_exc()
        protocol.send(
            out,
            protocol.error_event(
                "internal",
                f"loading with intel-npu-acceleration-library failed: {_one_line(exc)}",
                "run with --debug and see the worker log",
            ),
        )
        return 1
    protocol.send(out, ready)
    threading.Thread(target=worker.read_requests, name="phi3-npu-requests", daemon=True).start()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
