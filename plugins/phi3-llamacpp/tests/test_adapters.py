"""LoRA adapters on llama.cpp: GGUF LoRA files from peft adapters, one adapter per generation.

Everything is compared with transformers + peft, fp32, the adapter merged (the adapters are random
but discriminating: applied wrongly, or not at all, the greedy ids change).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import phi3
from phi3.testing.adapters import make_lora_adapter, reference_adapter_ids
from phi3.testing.fixtures import RunPhi3
from phi3.testing.reference import encode_prompt, reference_greedy_ids

PROMPT = "The quick brown fox"
NEW = 16


@pytest.fixture(scope="module")
def adapters(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    return {
        "a": make_lora_adapter(tiny_phi3, folder / "a", seed=0),
        "b": make_lora_adapter(tiny_phi3, folder / "b", seed=1, rank=4, targets=("qkv_proj", "down_proj")),
    }


@pytest.fixture(scope="module")
def wanted(tiny_phi3: Path, adapters: dict[str, Path]) -> dict[str | None, list[int]]:
    ids = encode_prompt(tiny_phi3, PROMPT)
    result: dict[str | None, list[int]] = {
        n: reference_adapter_ids(tiny_phi3, p, ids, NEW) for n, p in adapters.items()
    }
    result[None] = reference_greedy_ids(tiny_phi3, input_ids=ids, max_new_tokens=NEW)
    assert len({tuple(v) for v in result.values()}) == 3, "the test adapters do not discriminate"
    return result


def _load(tiny: Path, precision: str, adapters: dict[str, Path]) -> phi3.Model:
    return phi3.load(str(tiny), backend="llamacpp", device="CPU", precision=precision, adapters=adapters)


def _ids(model: phi3.Model, adapter: str | None, prompt: str = PROMPT) -> list[int]:
    return list(model.generate(prompt, max_new_tokens=NEW, ignore_eos=True, adapter=adapter).token_ids)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_adapters_give_the_merged_fp32_greedy_ids_and_never_leak(
    tiny_phi3: Path, adapters: dict[str, Path], wanted: dict[str | None, list[int]], precision: str
) -> None:
    """A, base, B, A, base, B on one model, same prompt each time: each answer is the reference's."""
    order: list[str | None] = ["a", None, "b", "a", None, "b"]
    with _load(tiny_phi3, precision, adapters) as model:
        assert model.adapters == ("a", "b")
        assert [_ids(model, name) for name in order] == [wanted[name] for name in order]


def _kl(p: Any, q: Any) -> float:
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def _merged_logprobs(tiny: Path, adapter: Path, ids: list[int]) -> Any:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        logits = merged(torch.tensor([ids]), use_cache=False).logits[0].to(torch.float32)
    return torch.log_softmax(logits, dim=-1).numpy()


@pytest.mark.parametrize(
    ("precision", "max_kl", "max_share", "min_top1"),
    [("int8", 1e-4, 0.01, 0.9), ("int4", 2e-3, 0.1, 0.6)],
)
def test_quantized_bases_stay_close_to_the_merged_fp32_model(
    tiny_phi3: Path,
    adapters: dict[str, Path],
    wanted: dict[str | None, list[int]],
    precision: str,
    max_kl: float,
    max_share: float,
    min_top1: float,
) -> None:
    """Teacher-forced over prompt + the reference answer: a small KL to the merged fp32 model, and a
    small share of the KL the base model (no adapter) has from it, so the adapter is really applied.
    Measured on the tiny model: Q8_0 KL ~2e-6 (top-1 0.97), Q4_0 ~3e-4 (0.79); the adapter's own
    effect ~1e-2."""
    from phi3_llamacpp.api import prefill_logprobs

    seq = encode_prompt(tiny_phi3, PROMPT) + wanted["a"]
    reference = _merged_logprobs(tiny_phi3, adapters["a"], seq)
    with _load(tiny_phi3, precision, {"a": adapters["a"]}) as model:
        adapted = prefill_logprobs(model, seq, adapter="a")
        base = prefill_logprobs(model, seq)
    assert _kl(reference, adapted) < max_kl
    assert _kl(reference, adapted) < max_share * _kl(reference, base)
    assert float((reference.argmax(-1) == adapted.argmax(-1)).mean()) >= min_top1


def test_a_cache_filled_under_another_adapter_is_never_reused(
    tiny_phi3: Path, adapters: dict[str, Path], wanted: dict[str | None, list[int]]
) -> None:
    """Keys and values computed under adapter a differ from the base's: a prefix cache that kept them
    for a base request would answer wrongly. Shown on llama.cpp directly, then phi3's answers after a
    request for a, on the very same prompt (what a prefix cache would reuse whole), are the base's."""
    from phi3_llamacpp.api import prefill_logprobs
    from phi3_llamacpp.generate import _decode, start_fresh
    from phi3_llamacpp.lora import activate
    from phi3_llamacpp.session import _runtime

    ids = encode_prompt(tiny_phi3, PROMPT)
    with _load(tiny_phi3, "fp32", {"a": adapters["a"]}) as model:
        clean = prefill_logprobs(model, ids)[-1]
        runtime = _runtime(model.session)
        lc, ctx = runtime.llama_cpp, runtime.llama.ctx
        start_fresh(runtime, "a")
        _decode(runtime, ctx, ids[:-1])  # the prefix, cached under a
        activate(lc, ctx, runtime.adapters, None)
        _decode(runtime, ctx, ids[-1:])  # the last token under the base, on a's cache
        n_vocab = len(clean)
        stale = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
        assert not np.allclose(stale - stale.max(), clean - clean.max(), atol=1e-3)
        for name in ("a", None, "a", None):
            assert _ids(model, name) == wanted[name]


def test_unknown_adapter_is_refused_before_decoding(tiny_phi3: Path, adapters: dict[str, Path]) -> None:
    from phi3.errors import AdapterError

    with _load(tiny_phi3, "fp32", {"a": adapters["a"]}) as model:
        with pytest.raises(AdapterError, match="'nope'"):
            model.generate(PROMPT, max_new_tokens=2, adapter="nope")
        assert model.generate(PROMPT, max_new_tokens=2).token_ids


def test_the_gguf_adapter_is_what_llama_cpp_expects(tiny_phi3: Path, adapters: dict[str, Path]) -> None:
    """general.type adapter, adapter.type lora, alpha 0 (scale = the per-context scale, 1), the base's
    architecture, and A/B of each adapted Phi-3 module under the base tensor's name."""
    import llama_cpp

    from phi3_llamacpp.lora import LORA_GGUF_NAME
    from phi3_llamacpp.session import _runtime

    with _load(tiny_phi3, "fp32", {"a": adapters["a"]}) as model:
        runtime = _runtime(model.session)
        handle = runtime.adapters["a"]
        buf = ctypes.create_string_buffer(256)

        def meta(key: str) -> str:
            size = llama_cpp.llama_adapter_meta_val_str(handle, key.encode(), buf, len(buf))
            return buf.value.decode() if size >= 0 else ""

        assert meta("general.type") == "adapter"
        assert meta("adapter.type") == "lora"
        assert float(meta("adapter.lora.alpha")) == 0.0
        assert meta("general.architecture") == runtime.llama.metadata["general.architecture"]
    files = list((phi3.cache.phi3_home() / "adapters").rglob(LORA_GGUF_NAME))
    assert files


def test_cli_generate_with_an_adapter_gives_the_reference_ids(
    tiny_phi3: Path, adapters: dict[str, Path], wanted: dict[str | None, list[int]], run_phi3: RunPhi3
) -> None:
    """``phi3 generate TINY "..." --adapter DIR --raw -n 16 --json``: the reference's ids up to its
    end-of-sequence token (which phi3 does not return); then two adapters, the second picked with
    --use-adapter and decoding past EOS, gives all 16 of the reference's."""
    ids = encode_prompt(tiny_phi3, PROMPT)
    expected = reference_adapter_ids(tiny_phi3, adapters["a"], ids, NEW, ignore_eos=False)
    args = ["generate", str(tiny_phi3), PROMPT, "--backend", "llamacpp", "--device", "CPU", "--precision", "fp32"]
    done = run_phi3(*args, "--adapter", str(adapters["a"]), "--raw", "-n", str(NEW), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["adapter"] == "a"
    assert result["token_ids"] == (expected[:-1] if result["finish_reason"] == "eos" else expected)
    two = ["--adapter", f"first={adapters['a']}", "--adapter", f"second={adapters['b']}", "--use-adapter", "second"]
    done = run_phi3(*args, *two, "--raw", "-n", str(NEW), "--ignore-eos", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["adapter"], result["token_ids"]) == ("second", wanted["b"])


class _OtherShapes:
    """An adapter-like object whose qkv A/B fit another model (phi3-core refuses real ones earlier)."""

    name, rank = "wrong", 4

    def weights(self) -> dict[str, tuple[Any, Any]]:
        a = np.zeros((4, 96), dtype=np.float32)
        return {"model.layers.0.self_attn.qkv_proj": (a, np.zeros((288, 4), dtype=np.float32))}


def test_a_lora_that_does_not_fit_the_base_gguf_is_refused_naming_the_tensor(tiny_phi3: Path, tmp_path: Path) -> None:
    from phi3.cache import phi3_home
    from phi3.errors import AdapterError
    from phi3_llamacpp.lora import LORA_GGUF_NAME, convert_adapter

    artifact = phi3.quantize(str(tiny_phi3), backend="llamacpp", precision="fp32")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AdapterError, match=r"'wrong' does not fit this GGUF: blk\.0\.attn_qkv\.weight: LoRA A"):
        convert_adapter(artifact, _OtherShapes(), out, phi3_home() / "llamacpp-converter", lambda *a: None)  # type: ignore[arg-type]
    assert not (out / LORA_GGUF_NAME).exists()


def test_a_grouped_query_layout_gives_the_merged_fp32_greedy_ids(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Phi-3-medium's layout (one KV head: q, k, v blocks of unequal width in qkv_proj): the fused
    LoRA rows land on llama.cpp's attn_qkv as transformers' do. (The LongRoPE layouts are not compared
    exactly: llama.cpp uses the long factors there already without adapters, see test_family_parity.)"""
    from phi3.testing.tiny_model import make_tiny_phi3

    root = tmp_path_factory.mktemp("medium")
    tiny = make_tiny_phi3(root / "tiny", variant="phi3-medium-4k")
    adapter = make_lora_adapter(tiny, root / "lora", seed=2, rank=6)
    ids = encode_prompt(tiny, PROMPT)
    expected = reference_adapter_ids(tiny, adapter, ids, NEW)
    assert expected != reference_greedy_ids(tiny, input_ids=ids, max_new_tokens=NEW)
    with _load(tiny, "fp32", {"m": adapter}) as model:
        assert [_ids(model, "m"), _ids(model, None)] == [
            expected,
            reference_greedy_ids(tiny, input_ids=ids, max_new_tokens=NEW),
        ]


def test_loading_on_a_repacked_q4_base_is_quiet_and_a_damaged_file_is_one_adapter_error(
    tiny_phi3: Path, adapters: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """On Q4_0 llama.cpp warns once per tensor (its repacked buffer cannot hold the adapter): not on the
    terminal. A truncated adapter.gguf is an AdapterError naming the adapter and the file."""
    from phi3.adapters import PreparedAdapter, read_lora_adapter
    from phi3.errors import AdapterError
    from phi3_llamacpp.lora import LORA_GGUF_NAME, load_adapters
    from phi3_llamacpp.session import _runtime

    with _load(tiny_phi3, "int4", {"a": adapters["a"]}) as model:
        assert "cannot use buft" not in capfd.readouterr().err
        runtime = _runtime(model.session)
        good = next((phi3.cache.phi3_home() / "adapters").rglob(LORA_GGUF_NAME))
        damaged = tmp_path / "damaged"
        damaged.mkdir()
        (damaged / LORA_GGUF_NAME).write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        config = json.loads((tiny_phi3 / "config.json").read_text())
        prepared = PreparedAdapter(read_lora_adapter("broken", adapters["a"], config), damaged)
        with pytest.raises(AdapterError, match=r"could not load adapter 'broken' from \S+damaged/adapter\.gguf"):
            load_adapters(runtime.llama_cpp, runtime.llama, {"broken": prepared})
        assert _ids(model, "a")  # the model keeps working
