"""Direct library calls, measured in a fresh process each: ``python workers.py SPEC.json OUT.json``.

The same child protocol as phi3's own measuring worker (:func:`phi3.bench.run_child`): read a JSON
spec, do one thing, write one JSON object. These workers never import phi3 (except the
``phi3_greedy`` mode), so they measure the vendor library alone: what a user calling it directly
would see. Timing is the same as phi3's: the clock starts right before the generate call, the first
token's arrival is the time to first token, and decode rate = (tokens - 1) / (last - first).

Modes (``spec["mode"]``):

- ``ov_genai``   openvino_genai.LLMPipeline on the artifact folder phi3 built
- ``ov_optimum`` optimum.intel.OVModelForCausalLM on the same folder, transformers generate()
- ``og``         onnxruntime_genai Model + Generator loop on the folder phi3-dml built
- ``llama_cpp``  llama-cpp-python on a GGUF file (EOS forbidden by a logits processor)
- ``hf``         transformers fp32 eager attention on the source checkpoint (the baseline)
- ``parity_ref`` transformers fp32: greedy continuations + next-token log-probs (the reference)
- ``parity_ov`` / ``parity_og`` / ``parity_llama``: the same sequences teacher-forced through an
  artifact; agreement and KL divergence against ``parity_ref``'s file
- ``phi3_greedy`` phi3.load + greedy generation of each parity prompt (free-running agreement)
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def peak_rss_bytes() -> int | None:
    """VmHWM of this process image (ru_maxrss survives exec and would report the parent's size)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Clock:
    """Token arrival times relative to ``start()``."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.times: list[float] = []
        self.ids: list[int] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def token(self, ids: Sequence[int]) -> None:
        now = time.perf_counter()
        for i in ids:
            self.times.append(now)
            self.ids.append(int(i))

    def result(self, end: float) -> dict[str, Any]:
        n = len(self.ids)
        first = self.times[0] if self.times else end
        decode_s = self.times[-1] - first if n > 1 else 0.0
        total = end - self.t0
        return {
            "ttft_s": first - self.t0,
            "decode_tokens_per_s": (n - 1) / decode_s if decode_s > 0 else 0.0,
            "e2e_tokens_per_s": n / total if total > 0 else 0.0,
            "total_s": total,
            "new_tokens": n,
            "token_ids": self.ids,
        }


def hide_broken_torchvision() -> None:
    """optimum-intel depends on torchvision; a CUDA wheel of it next to a CPU torch cannot import."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]


# -- measured generation ----------------------------------------------------------------------


def _timed(work: Callable[[], Any]) -> float:
    """Run the process's first, tiny request (see phi3.bench's ``first_call_s``); its duration."""
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _genai_config(pipe: Any, n: int) -> Any:
    config = pipe.get_generation_config()
    config.max_new_tokens = n
    config.min_new_tokens = n
    config.ignore_eos = True
    config.do_sample = False
    config.apply_chat_template = False
    return config


def ov_genai(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import openvino_genai as ov_genai

    pipe = ov_genai.LLMPipeline(spec["artifact"], spec.get("device", "CPU"), **spec["ov_config"])
    load_s = time.perf_counter() - started
    config = pipe.get_generation_config()
    n = int(spec["new_tokens"])
    config.max_new_tokens = n
    config.min_new_tokens = n
    config.ignore_eos = True
    config.do_sample = False
    config.apply_chat_template = False
    first = _timed(lambda: pipe.generate(spec["warmup_prompt"], _genai_config(pipe, 2)))
    clock = Clock()
    # Stream text the way openvino_genai does it itself (its C++ incremental TextStreamer), timing
    # each token as it arrives: what an application that shows the answer as it is written does.
    text = ov_genai.TextStreamer(pipe.get_tokenizer(), lambda piece: ov_genai.StreamingStatus.RUNNING)

    class Streamer(ov_genai.StreamerBase):  # type: ignore[misc]
        def write(self, token: Any) -> Any:
            clock.token([token] if isinstance(token, int) else list(token))
            return text.write(token)

        def end(self) -> None:
            text.end()

    clock.start()
    pipe.generate(spec["prompt"], config, Streamer())
    return {"load_s": load_s, "first_call_s": first, **clock.result(time.perf_counter())}


def _transformers_generate(model: Any, tokenizer: Any, spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    n = int(spec["new_tokens"])
    eos = [int(i) for i in spec["eos_ids"]]
    options = {
        "suppress_tokens": eos,
        "eos_token_id": eos,
        "pad_token_id": eos[0],
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "num_beams": 1,
    }

    def first_call() -> None:
        with torch.inference_mode():
            model.generate(
                **tokenizer(spec["warmup_prompt"], return_tensors="pt"), max_new_tokens=2, min_new_tokens=2, **options
            )

    first = _timed(first_call)
    clock = Clock()

    class Streamer(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            clock.token(value.reshape(-1).tolist())
            tokenizer.decode(clock.ids[-1:], skip_special_tokens=True)  # a streaming user decodes too

        def end(self) -> None:
            return None

    clock.start()
    inputs = tokenizer(spec["prompt"], return_tensors="pt")
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, streamer=Streamer(), **options)
    return {"first_call_s": first, **clock.result(time.perf_counter())}


def ov_optimum(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    hide_broken_torchvision()
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["artifact"])
    model = OVModelForCausalLM.from_pretrained(
        spec["artifact"], device=spec.get("device", "CPU"), ov_config=dict(spec["ov_config"]), compile=True
    )
    load_s = time.perf_counter() - started
    return {"load_s": load_s, **_transformers_generate(model, tokenizer, spec)}


def hf(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    hide_broken_torchvision()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["checkpoint"])
    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    load_s = time.perf_counter() - started
    return {"load_s": load_s, **_transformers_generate(model, tokenizer, spec)}


def og(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(spec["artifact"])
    if spec.get("intra_op_num_threads"):  # the thread count phi3-dml gives the CPU provider, so both sides match
        threads = int(spec["intra_op_num_threads"])
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    load_s = time.perf_counter() - started
    ids = [int(i) for i in spec["prompt_ids"]]  # phi3-dml adds the BOS that og's tokenizer leaves out
    n = int(spec["new_tokens"])

    def first_call() -> None:
        warm = [int(i) for i in spec["warmup_ids"]]
        params = og.GeneratorParams(model)
        params.set_search_options(
            max_length=len(warm) + 2, min_length=len(warm) + 2, do_sample=False, top_k=1, batch_size=1, num_beams=1
        )
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(warm, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
            tokenizer.decode(generator.get_next_tokens())

    first = _timed(first_call)
    clock = Clock()
    clock.start()
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False, top_k=1, batch_size=1, num_beams=1
    )
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    stream = tokenizer.create_stream()
    while len(clock.ids) < n and not generator.is_done():
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        stream.decode(token)
        clock.token([token])
    end = time.perf_counter()
    del generator
    return {"load_s": load_s, "first_call_s": first, **clock.result(end)}


def _llama(path: str, n_ctx: int, logits_all: bool = False) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=int(spec_threads()), logits_all=logits_all, verbose=False
    )


def spec_threads() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def llama_cpp(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import numpy as np
    from llama_cpp import LogitsProcessorList

    ids = [int(i) for i in spec["prompt_ids"]]
    n = int(spec["new_tokens"])
    llm = _llama(spec["gguf"], len(ids) + n + 8)
    load_s = time.perf_counter() - started
    eos = [int(i) for i in spec["eos_ids"]]

    def no_eos(_ids: Any, logits: Any) -> Any:
        logits[eos] = -np.inf
        return logits

    def first_call() -> None:
        for k, _ in enumerate(
            llm.generate(
                [int(i) for i in spec["warmup_ids"]],
                temp=0.0,
                top_k=1,
                reset=True,
                logits_processor=LogitsProcessorList([no_eos]),
            )
        ):
            if k >= 1:
                break

    first = _timed(first_call)
    clock = Clock()
    clock.start()
    for token in llm.generate(
        ids,
        temp=0.0,
        top_k=1,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.0,
        reset=True,
        logits_processor=LogitsProcessorList([no_eos]),
    ):
        llm.detokenize([token])
        clock.token([token])
        if len(clock.ids) >= n:
            break
    return {"load_s": load_s, "first_call_s": first, **clock.result(time.perf_counter())}


# -- parity -----------------------------------------------------------------------------------


def _log_softmax(row: Any) -> Any:
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    shifted = row - row.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def parity_ref(spec: dict[str, Any]) -> dict[str, Any]:
    """Greedy continuations (EOS suppressed) and their next-token log-probs under fp32 transformers."""
    hide_broken_torchvision()
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["checkpoint"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    n, vocab = int(spec["new_tokens"]), int(spec["used_vocab"])
    eos = [int(i) for i in spec["eos_ids"]]
    continuations, logprobs = [], []
    for ids in spec["prompts_ids"]:
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=n,
                min_new_tokens=n,
                suppress_tokens=eos,
                eos_token_id=eos,
                pad_token_id=eos[0],
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = out[0, len(ids) :].tolist()
            logits = model(torch.tensor([ids + new]), use_cache=False).logits[0].float().numpy()
        rows = logits[len(ids) - 1 : len(ids) - 1 + n, :vocab]
        continuations.append([int(i) for i in new])
        logprobs.append(np.stack([_log_softmax(r) for r in rows]))
    np.save(spec["out_npy"], np.stack(logprobs))
    return {"continuations": continuations}


def _compare(spec: dict[str, Any], rows_per_prompt: Sequence[Any]) -> dict[str, Any]:
    """Top-1 agreement and mean KL(reference || candidate) over every position of every prompt."""
    import numpy as np

    ref = np.load(spec["ref_npy"])
    vocab = int(spec["used_vocab"])
    agree, total, kls = 0, 0, []
    for p, rows in enumerate(rows_per_prompt):
        for k, row in enumerate(rows):
            cand = _log_softmax(np.asarray(row, dtype=np.float64)[:vocab])
            r = ref[p, k]
            kls.append(float(np.sum(np.exp(r) * (r - cand))))
            agree += int(np.argmax(cand) == np.argmax(r))
            total += 1
    return {
        "top1_agreement": agree / total,
        "mean_kl": float(np.mean(kls)),
        "max_kl": float(np.max(kls)),
        "positions": total,
    }


def _sequences(spec: dict[str, Any]) -> list[tuple[list[int], list[int]]]:
    return [([int(i) for i in p], [int(i) for i in c]) for p, c in zip(spec["prompts_ids"], spec["continuations"])]


def parity_ov(spec: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced logits from the OpenVINO IR (optimum-intel forward over the whole sequence)."""
    import torch

    hide_broken_torchvision()
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(
        spec["artifact"], device="CPU", ov_config=dict(spec["ov_config"]), compile=True
    )
    rows = []
    for prompt, cont in _sequences(spec):
        seq = prompt + cont
        with torch.inference_mode():
            logits = (
                model(
                    input_ids=torch.tensor([seq]),
                    attention_mask=torch.ones(1, len(seq), dtype=torch.long),
                    past_key_values=None,
                )
                .logits[0]
                .float()
                .numpy()
            )
        rows.append(logits[len(prompt) - 1 : len(prompt) - 1 + len(cont)])
    return _compare(spec, rows)


def parity_og(spec: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced logits from onnxruntime-genai: the prompt, then each reference token in turn."""
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(spec["artifact"])
    rows_per_prompt = []
    for prompt, cont in _sequences(spec):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + len(cont) + 1, do_sample=False, top_k=1, batch_size=1)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(prompt, dtype=np.int32))
        rows = []
        for k, token in enumerate(cont):
            logits = np.asarray(generator.get_output("logits"), dtype=np.float32)
            rows.append(logits.reshape(-1, logits.shape[-1])[-1])
            if k + 1 < len(cont):
                generator.append_tokens(np.asarray([token], dtype=np.int32))
        rows_per_prompt.append(rows)
        del generator
    return _compare(spec, rows_per_prompt)


def parity_llama(spec: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced logits from llama.cpp (logits for every position of one evaluation)."""
    import numpy as np

    longest = max(len(p) + len(c) for p, c in _sequences(spec))
    llm = _llama(spec["gguf"], longest + 8, logits_all=True)
    rows = []
    for prompt, cont in _sequences(spec):
        llm.reset()
        llm.eval(prompt + cont)
        scores = np.array(llm.scores[: len(prompt) + len(cont)], dtype=np.float32)  # a copy: the next eval reuses it
        rows.append(scores[len(prompt) - 1 : len(prompt) - 1 + len(cont)])
    out = _compare(spec, rows)
    greedy = []  # free-running greedy continuation, EOS forbidden, for the agreement column
    eos = [int(i) for i in spec["eos_ids"]]

    def no_eos(_ids: Any, logits: Any) -> Any:
        logits[eos] = -np.inf
        return logits

    from llama_cpp import LogitsProcessorList

    for prompt, cont in _sequences(spec):
        got: list[int] = []
        for token in llm.generate(
            prompt,
            temp=0.0,
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            reset=True,
            logits_processor=LogitsProcessorList([no_eos]),
        ):
            got.append(int(token))
            if len(got) >= len(cont):
                break
        greedy.append(got)
    out["continuations"] = greedy
    return out


def phi3_greedy(spec: dict[str, Any]) -> dict[str, Any]:
    """Free-running greedy continuations through phi3 (EOS suppressed), raw prompts."""
    import phi3

    options = dict(spec.get("options") or {})
    with phi3.load(
        spec["model"],
        backend=spec["backend"],
        engine=spec.get("engine"),
        precision=spec["precision"],
        device=spec.get("device") or "auto",
        **options,
    ) as model:
        outs = [
            list(model.generate(text, max_new_tokens=int(spec["new_tokens"]), ignore_eos=True).token_ids)
            for text in spec["prompts"]
        ]
    return {"continuations": outs}


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ov_genai": ov_genai,
    "ov_optimum": ov_optimum,
    "og": og,
    "llama_cpp": llama_cpp,
    "hf": hf,
    "parity_ref": parity_ref,
    "parity_ov": parity_ov,
    "parity_og": parity_og,
    "parity_llama": parity_llama,
    "phi3_greedy": phi3_greedy,
}


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: python workers.py SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = MODES[spec["mode"]](spec)
    out["peak_rss_bytes"] = peak_rss_bytes()
    Path(sys.argv[2]).write_text(json.dumps(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
