"""phi3.adapters: a peft LoRA folder read, checked and normalised; compared with peft's own merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phi3.adapters import LoraAdapter, read_lora_adapter, write_peft_folder
from phi3.errors import AdapterError
from phi3.lora_files import parse_safetensors, write_safetensors
from phi3.testing.adapters import _load_base, _merged, _version, make_lora_adapter, reference_adapter_ids
from phi3.testing.reference import encode_prompt, reference_greedy_ids
from phi3.testing.tiny_model import make_tiny_phi3

PROMPT = "Hello world, this is"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi3(tmp_path_factory.mktemp("adapters") / "mini", variant="phi3-mini-4k")


@pytest.fixture(scope="module")
def lora(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(base, tmp_path_factory.mktemp("adapters") / "lora", seed=0)


def _config(model: Path) -> dict[str, Any]:
    return dict(json.loads((model / "config.json").read_text()))


def _parameters(model: Any) -> dict[str, Any]:
    return {name: p.detach().numpy() for name, p in model.named_parameters()}


def test_weights_are_what_peft_merges(base: Path, lora: Path) -> None:
    adapter = read_lora_adapter("a", lora, _config(base))
    assert adapter.target_modules == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    assert adapter.rank == 8 and adapter.num_layers == 2 and adapter.base_model == str(base.resolve())
    merged = _parameters(_merged(str(base.resolve()), str(lora.resolve()), _version(lora)))
    plain = _parameters(_load_base(base))
    weights = adapter.weights()
    assert len(weights) == 4 * adapter.num_layers
    for key, (a, b) in weights.items():
        assert a.dtype == np.float32 and a.shape[0] == b.shape[1] == 8
        np.testing.assert_allclose(plain[key + ".weight"] + b @ a, merged[key + ".weight"], atol=1e-5)
        assert not np.allclose(plain[key + ".weight"], merged[key + ".weight"], atol=1e-3)


def test_the_adapter_discriminates_and_the_canonical_folder_answers_the_same(
    base: Path, lora: Path, tmp_path: Path
) -> None:
    ids = encode_prompt(base, PROMPT)
    adapted = reference_adapter_ids(base, lora, ids, 16)
    assert adapted != reference_greedy_ids(base, input_ids=ids, max_new_tokens=16)
    canonical = write_peft_folder(read_lora_adapter("a", lora, _config(base)), tmp_path / "canon")
    assert json.loads((canonical / "adapter_config.json").read_text())["lora_alpha"] == 8
    assert reference_adapter_ids(base, canonical, ids, 16) == adapted


def test_content_hash_follows_the_bytes(base: Path, lora: Path, tmp_path: Path) -> None:
    first = read_lora_adapter("a", lora, _config(base))
    assert first == read_lora_adapter("a", lora, _config(base))
    other = make_lora_adapter(base, tmp_path / "other", seed=1)
    assert read_lora_adapter("a", other, _config(base)).content_hash != first.content_hash


def _split_fused(lora: Path, out: Path, config: dict[str, Any], *, skip: str = "") -> Path:
    """The adapter as a llama-style fine-tune: q/k/v_proj and gate/up_proj adapted separately."""
    tensors = {
        k: t.to_float32() for k, t in parse_safetensors((lora / "adapter_model.safetensors").read_bytes(), lora).items()
    }
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    widths = {"qkv_proj": [("q_proj", heads * head_dim), ("k_proj", kv * head_dim), ("v_proj", kv * head_dim)]}
    widths["gate_up_proj"] = [("gate_proj", config["intermediate_size"]), ("up_proj", config["intermediate_size"])]
    split: dict[str, Any] = {}
    for key, value in tensors.items():
        fused = next((name for name in widths if f".{name}." in key), None)
        if fused is None:
            split[key] = value
            continue
        row = 0
        for part, width in widths[fused]:
            new = key.replace(fused, part)
            if ".lora_B." in key:
                split[new] = value[row : row + width]
            else:
                split[new] = value
            row += width
    split = {k: v for k, v in split.items() if not skip or f".{skip}." not in k}
    out.mkdir()
    data = json.loads((lora / "adapter_config.json").read_text())
    data["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    (out / "adapter_config.json").write_text(json.dumps(data))
    write_safetensors(out / "adapter_model.safetensors", split)
    return out


def test_separate_projections_are_fused(base: Path, lora: Path, tmp_path: Path) -> None:
    config = _config(base)
    fused = read_lora_adapter("a", lora, config).weights()
    split = read_lora_adapter("b", _split_fused(lora, tmp_path / "split", config), config)
    assert split.target_modules == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    for key, (a, b) in split.weights().items():
        np.testing.assert_allclose(b @ a, fused[key][1] @ fused[key][0], atol=1e-6)
    # k_proj left out (a fine-tune of q and v only): its rows get no update
    partial = read_lora_adapter("c", _split_fused(lora, tmp_path / "qv", config, skip="k_proj"), config)
    a, b = partial.weights()["model.layers.0.self_attn.qkv_proj"]
    q = config["num_attention_heads"] * config["hidden_size"] // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * config["hidden_size"] // config["num_attention_heads"]
    assert not (b @ a)[q : q + kv].any() and (b @ a)[:q].any() and (b @ a)[q + kv :].any()


def test_scaling_patterns_and_rslora(base: Path, lora: Path, tmp_path: Path) -> None:
    """alpha_pattern / use_rslora change the scaling as peft applies it (compared with peft's merge)."""
    folder = tmp_path / "patterned"
    folder.mkdir()
    data = json.loads((lora / "adapter_config.json").read_text())
    data.update(alpha_pattern={"o_proj": 3.0}, use_rslora=True)
    (folder / "adapter_config.json").write_text(json.dumps(data))
    (folder / "adapter_model.safetensors").write_bytes((lora / "adapter_model.safetensors").read_bytes())
    merged = _parameters(_merged(str(base.resolve()), str(folder.resolve()), _version(folder)))
    plain = _parameters(_load_base(base))
    for key, (a, b) in read_lora_adapter("p", folder, _config(base)).weights().items():
        np.testing.assert_allclose(plain[key + ".weight"] + b @ a, merged[key + ".weight"], atol=1e-5)


def test_a_lora_adapter_is_a_frozen_value(base: Path, lora: Path) -> None:
    adapter = read_lora_adapter("a", lora, _config(base))
    assert isinstance(adapter, LoraAdapter)
    with pytest.raises(AttributeError):
        adapter.name = "b"  # type: ignore[misc]


def test_base_model_hub_id_mismatch(base: Path, lora: Path, tmp_path: Path) -> None:
    folder = tmp_path / "hub"
    folder.mkdir()
    data = json.loads((lora / "adapter_config.json").read_text())
    data["base_model_name_or_path"] = "microsoft/Phi-3.5-mini-instruct"
    (folder / "adapter_config.json").write_text(json.dumps(data))
    (folder / "adapter_model.safetensors").write_bytes((lora / "adapter_model.safetensors").read_bytes())
    with pytest.raises(AdapterError, match=r"trained on microsoft/Phi-3\.5-mini-instruct, not on"):
        read_lora_adapter("h", folder, _config(base), base_model_id="microsoft/Phi-3-mini-4k-instruct")
    same = read_lora_adapter("h", folder, _config(base), base_model_id="microsoft/phi-3.5-mini-instruct")
    assert same.base_model == "microsoft/Phi-3.5-mini-instruct"
