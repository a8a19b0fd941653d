"""LoRA adapters on the dml backend: the same greedy ids as transformers + peft (merged, fp32).

Each adapter is random and discriminating (``make_lora_adapter``: its greedy tokens differ from the
base's), so a graph that ignored it, applied it to the wrong rows of a fused projection, or kept the
previous request's adapter active would fail these comparisons.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import phi3
import pytest
from phi3.errors import AdapterError
from phi3.testing.adapters import make_lora_adapter, reference_adapter_ids
from phi3.testing.fixtures import RunPhi3
from phi3.testing.reference import encode_prompt, reference_logprobs

from conftest import PROMPT, LoadDml
from phi3_dml import lora
from phi3_dml.api import teacher_forced_logprobs

NEW_TOKENS = 16

HIGH_FIDELITY = [
    pytest.param("fp32", {}, id="fp32"),
    pytest.param("fp16", {}, id="fp16-cpu-graph"),  # MultiHeadAttention, separate q/k/v projections
    pytest.param("fp16", {"execution_provider": "dml"}, id="fp16-dml-graph"),  # GroupQueryAttention, on the CPU
]

KL_BUDGET = {"int4": 0.002, "int8": 0.0002}
"""Mean nats/token, quantized base + adapter vs the merged fp32 model, teacher-forced on the merged
model's greedy answer. Measured on the tiny model (cpu graphs, block 32): int4 0.0003, int8 0.000002;
the same graphs without the adapter score 0.012 (the bound is far below that, so it proves the adapter
is applied, not only that quantization is mild)."""
TOP1_FLOOR = {"int4": 0.75, "int8": 0.95}
"""Share of answer positions whose arg-max matches the merged model's (int4 measured 14/16: the tiny
random model's distributions are flat, so a near-tie flips at int4)."""


@pytest.fixture(scope="session")
def adapter_dirs(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two adapters of the tiny model: every Phi-3 target at rank 8, and q/k/v + down only at rank 4."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "full": make_lora_adapter(tiny_phi3, root / "full", seed=1),
        "attn": make_lora_adapter(tiny_phi3, root / "attn", rank=4, targets=("qkv_proj", "down_proj"), seed=2),
    }


@pytest.fixture(scope="session")
def expected(tiny_phi3: Path, adapter_dirs: dict[str, Path]) -> dict[str | None, list[int]]:
    """The merged fp32 reference's greedy ids per adapter (None: the base model)."""
    from phi3.testing.reference import reference_greedy_ids

    ids = encode_prompt(tiny_phi3, PROMPT)
    answers: dict[str | None, list[int]] = {
        name: reference_adapter_ids(tiny_phi3, path, ids, NEW_TOKENS) for name, path in adapter_dirs.items()
    }
    answers[None] = reference_greedy_ids(tiny_phi3, input_ids=ids, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert len({tuple(v) for v in answers.values()}) == 3, "the adapters must be discriminating"
    return answers


def _load(tiny_phi3: Path, adapter_dirs: dict[str, Path], precision: str, **options: Any) -> phi3.Model:
    return phi3.load(
        tiny_phi3,
        backend="dml",
        device="cpu",
        precision=precision,
        adapters={name: str(path) for name, path in adapter_dirs.items()},
        **options,
    )


@pytest.mark.parametrize(("precision", "options"), HIGH_FIDELITY)
def test_greedy_ids_match_the_merged_reference_and_never_leak(
    tiny_phi3: Path,
    adapter_dirs: dict[str, Path],
    expected: dict[str | None, list[int]],
    precision: str,
    options: dict[str, Any],
) -> None:
    """Alternating adapters and the base on one loaded model: each request gets exactly its own."""
    with _load(tiny_phi3, adapter_dirs, precision, **options) as model:
        assert set(model.adapters) == {"full", "attn"}
        for name in ("full", None, "attn", "full", "attn", None, "full"):
            got = list(model.generate(PROMPT, max_new_tokens=NEW_TOKENS, ignore_eos=True, adapter=name).token_ids)
            assert got == expected[name], f"{precision} {options} adapter={name}: {got} != {expected[name]}"


def test_chat_and_streams_take_the_adapter(
    tiny_phi3: Path, adapter_dirs: dict[str, Path], expected: dict[str | None, list[int]]
) -> None:
    with _load(tiny_phi3, adapter_dirs, "fp32") as model:
        stream = model.stream(PROMPT, max_new_tokens=NEW_TOKENS, ignore_eos=True, adapter="attn")
        text = "".join(stream)
        assert stream.result is not None and list(stream.result.token_ids) == expected["attn"]
        assert text == stream.result.text
        base = model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=8, ignore_eos=True)
        adapted = model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=8, ignore_eos=True, adapter="full")
        assert base.token_ids != adapted.token_ids


def _merged_checkpoint(tiny_phi3: Path, adapter: Path, out: Path) -> Path:
    """The base with the adapter merged (peft ``merge_and_unload``), saved as an fp32 checkpoint."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_phi3, dtype=torch.float32)
    peft.PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(out)
    for item in tiny_phi3.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy2(item, out / item.name)
    return out


def _kl(expected: np.ndarray, got: np.ndarray, scored: slice) -> float:
    p = np.exp(expected[scored].astype(np.float64))
    return float(np.mean(np.sum(p * (expected[scored] - got[scored].astype(np.float64)), axis=-1)))


@pytest.mark.parametrize("precision", ["int4", "int8"])
def test_quantized_bases_with_an_adapter_stay_close_to_the_merged_fp32_model(
    tiny_phi3: Path,
    adapter_dirs: dict[str, Path],
    expected: dict[str | None, list[int]],
    tmp_path: Path,
    precision: str,
) -> None:
    merged = _merged_checkpoint(tiny_phi3, adapter_dirs["full"], tmp_path / "merged")
    prompt_ids = encode_prompt(tiny_phi3, PROMPT)
    ids = prompt_ids + expected["full"]
    reference = reference_logprobs(merged, ids)
    scored = slice(len(prompt_ids) - 1, len(ids) - 1)
    with _load(tiny_phi3, adapter_dirs, precision) as model:
        adapted = teacher_forced_logprobs(model, ids, adapter="full")
        plain = teacher_forced_logprobs(model, ids)
    kl, kl_without = _kl(reference, adapted, scored), _kl(reference, plain, scored)
    top1 = float(np.mean(adapted[scored].argmax(-1) == reference[scored].argmax(-1)))
    print(f"{precision} + adapter: KL {kl:.6f} nats/token, top-1 {top1:.3f}; without it KL {kl_without:.4f}")
    assert kl <= KL_BUDGET[precision], f"{precision} + adapter: mean KL {kl:.5f} > {KL_BUDGET[precision]}"
    assert top1 >= TOP1_FLOOR[precision], f"{precision} + adapter: top-1 agreement {top1:.3f}"
    assert kl_without > 3 * KL_BUDGET["int4"], "the adapter must matter for this bound to mean anything"


def test_every_new_artifact_carries_the_lora_graph(
    tiny_phi3: Path, adapter_dirs: dict[str, Path], load_dml: LoadDml
) -> None:
    """``phi3 quantize`` is unchanged: the base artifact (no adapter option) serves every adapter."""
    artifact = load_dml("int4").artifact
    graph = lora.LoraGraph.from_manifest(artifact.manifest)
    assert graph is not None and (artifact.path / graph.graph).is_file()
    assert graph.dtype == "float32" and set(graph.projections) == {
        "qkv_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    with _load(tiny_phi3, adapter_dirs, "int4") as model:
        assert model.artifact.key == artifact.key, "loading with adapters must reuse the base artifact"


def test_an_artifact_without_the_lora_graph_is_refused_by_name(
    tiny_phi3: Path, adapter_dirs: dict[str, Path], load_dml: LoadDml, tmp_path: Path
) -> None:
    """An artifact built before phi3-dml had adapter graphs: one line naming the rebuild."""
    old = tmp_path / "old-artifact"
    shutil.copytree(load_dml("fp32").artifact.path, old)
    manifest_path = old / "phi3-manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.pop(lora.MANIFEST_KEY)
    manifest["files"].pop(lora.LORA_GRAPH)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    (old / lora.LORA_GRAPH).unlink()
    with pytest.raises(AdapterError, match="has no graph with LoRA inputs") as info:
        phi3.load(old, backend="dml", device="cpu", adapters={"full": str(adapter_dirs["full"])})
    assert "rebuild" in str(info.value)
    with phi3.load(old, backend="dml", device="cpu") as model:  # without adapters it still loads
        assert model.generate(PROMPT, max_new_tokens=2, ignore_eos=True).new_tokens == 2


def test_cli_generate_with_an_adapter_gives_the_reference_ids(
    run_phi3: RunPhi3, tiny_phi3: Path, adapter_dirs: dict[str, Path], expected: dict[str | None, list[int]]
) -> None:
    done = run_phi3(
        "generate",
        str(tiny_phi3),
        PROMPT,
        "-b",
        "dml",
        "-d",
        "cpu",
        "-p",
        "fp32",
        "--adapter",
        str(adapter_dirs["full"]),
        "--raw",
        "-n",
        str(NEW_TOKENS),
        "--ignore-eos",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_ids"] == expected["full"]
