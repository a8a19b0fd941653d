"""LoRA adapters for tests: random but discriminating peft folders, and the fp32 merged reference.

:func:`make_lora_adapter` builds an adapter WITH peft (``LoraConfig``, ``get_peft_model``,
``save_pretrained``), so the folder is exactly what fine-tunes ship, then fills its weights so that
the adapter is *discriminating*: on a probe prompt the merged model's greedy tokens differ from the
base model's (an adapter silently not applied fails a test), while every step keeps a clear top-1
margin (:data:`MIN_MARGIN`) and the continuation does not collapse into one repeated
token, so fp16/int8 rounding does not flip a near-tie and
make a correct backend look wrong. Seeds are tried in a fixed order until both hold, so the same
arguments always give the same adapter.

:func:`reference_adapter_ids` is the ground truth backends are compared with: transformers + peft on
the CPU in fp32, the adapter merged into the weights (``merge_and_unload``), greedy;
:func:`reference_mix_ids` is the same for a weighted mix of adapters.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phi3.testing.reference import _eos_ids, _greedy_loop, encode_prompt

__all__ = [
    "MIN_MARGIN",
    "PROBE_PROMPT",
    "make_lora_adapter",
    "reference_adapter_ids",
    "reference_mix_ids",
    "top1_margins",
]

DEFAULT_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
PROBE_PROMPT = "The quick brown fox"
"""The prompt the discriminating checks decode from."""
PROBE_TOKENS = 12
MIN_MARGIN = 0.02
"""Smallest top-1 minus top-2 logit, in standard deviations of that step's logits, the adapted model may
have on the probe (fp32, greedy path). Relative, because rounding errors scale with the logits: the
tiny default model's logits are ~100 times smaller than a discriminating variant's. Both bases' own
greedy paths have about 0.025 on the probe, and they hold fp16 parity on every backend."""
MIN_DISTINCT = 4
"""Distinct ids the adapted probe continuation needs: one token repeated would be a weak check."""
SEED_TRIES = 16


def _load_base(model_dir: Path) -> Any:
    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", device_map=None
    )
    model.eval()
    return model


def _fill(peft_model: Any, seed: int, strength: float) -> None:
    """Seeded LoRA weights whose update ``B @ A`` is about ``strength`` times the base weight's scale."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not hasattr(module, "lora_A") or "default" not in module.lora_A:
                continue
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            base_std = float(module.base_layer.weight.std())
            rank, width_in = a.shape
            a.copy_(torch.randn(a.shape, generator=generator) / math.sqrt(width_in))
            # (B @ A)[i, j] has std |B| * sqrt(rank) / sqrt(width_in); aim for strength * base_std
            scaling = float(module.scaling["default"])
            b_std = strength * base_std * math.sqrt(width_in) / (math.sqrt(rank) * scaling)
            b.copy_(torch.randn(b.shape, generator=generator) * b_std)
            del name


def top1_margins(model: Any, ids: Sequence[int], new_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy continuation of ``ids`` (full forwards, fp32) and the top-1 margin at every step, in
    standard deviations of that step's logits."""
    import torch

    sequence, margins = list(ids), []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([sequence]), use_cache=False).logits[0, -1].to(torch.float32)
            top = torch.topk(logits, 2)
            margins.append(float((top.values[0] - top.values[1]) / logits.std()))
            sequence.append(int(top.indices[0]))
    return sequence[len(ids) :], margins


def make_lora_adapter(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    rank: int = 8,
    targets: Sequence[str] = DEFAULT_TARGETS,
    seed: int = 0,
    strength: float = 1.0,
) -> Path:
    """Write a random, discriminating peft LoRA adapter for the checkpoint ``model_dir`` into ``out_dir``.

    ``targets`` are module names as peft takes them (Phi-3's fused ``qkv_proj``/``gate_up_proj``, or
    any module name of the base). ``strength`` scales the update relative to the base weights.
    Raises RuntimeError when no seed in :data:`SEED_TRIES` gives a discriminating adapter.
    """
    model_dir, out = Path(model_dir), Path(out_dir)
    base = _load_base(model_dir)  # first: it hides a broken torchvision, which `import peft` would trip on
    import peft

    probe = encode_prompt(model_dir, PROBE_PROMPT)
    base_ids, _ = top1_margins(base, probe, PROBE_TOKENS)
    config = peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False, lora_dropout=0.0
    )
    peft_model = peft.get_peft_model(base, config)
    for attempt in range(SEED_TRIES):
        _fill(peft_model, seed * 1000 + attempt, strength)
        ids, margins = top1_margins(peft_model, probe, PROBE_TOKENS)
        if ids != base_ids and min(margins) >= MIN_MARGIN and len(set(ids)) >= MIN_DISTINCT:
            break
    else:
        raise RuntimeError(
            f"no discriminating adapter for {model_dir} in {SEED_TRIES} seeds (rank {rank}, strength {strength})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        peft_model.save_pretrained(str(tmp))
        _stamp(tmp, model_dir)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _stamp(folder: Path, model_dir: Path) -> None:
    """peft records the base folder's path as given; record the resolved one (relative paths move)."""
    path = folder / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = str(model_dir.resolve())
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def reference_adapter_ids(
    model_dir: str | os.PathLike[str],
    adapter_dir: str | os.PathLike[str],
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    ignore_eos: bool = True,
) -> list[int]:
    """Greedy new ids of transformers + peft, fp32, the adapter merged (``merge_and_unload``)."""
    model = _merged(str(Path(model_dir).resolve()), str(Path(adapter_dir).resolve()), _version(adapter_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos = _eos_ids(model, tokenizer)
    return _greedy_loop(
        model, [int(i) for i in prompt_ids], max_new_tokens, eos, ignore_eos=ignore_eos, recompute=False
    )


def _version(adapter_dir: str | os.PathLike[str]) -> tuple[int, int]:
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    return (weights.stat().st_mtime_ns, weights.stat().st_size)


@functools.lru_cache(maxsize=4)
def _merged(model_dir: str, adapter_dir: str, version: tuple[int, int]) -> Any:
    """The base with the adapter merged, loaded once per adapter content; ``version`` only keys the cache."""
    del version
    base = _load_base(Path(model_dir))  # first: it hides a broken torchvision
    import peft

    merged = peft.PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.eval()
    return merged


def reference_mix_ids(
    model_dir: str | os.PathLike[str],
    mix: Sequence[tuple[str | os.PathLike[str], float]],
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    ignore_eos: bool = True,
) -> list[int]:
    """Greedy new ids of transformers + peft, fp32, with ``W + sum_i w_i B_i A_i`` merged for the
    ``(adapter folder, weight)`` pairs of ``mix`` (two or more folders).

    The mix is built by peft itself, ``add_weighted_adapter(..., combination_type="cat")`` (A's
    concatenated along the rank, ``w_i * scaling_i * A_i``), then merged: an implementation
    independent of phi3's own (:func:`phi3.adapters.mix_lora_adapters`), and "cat" is peft's exact
    combination (``linear`` averages A and B separately, ``svd`` truncates). peft turns a single
    adapter into ``linear`` (``sqrt(weight)``), hence two or more folders.
    """
    if len({str(Path(folder).resolve()) for folder, _ in mix}) != len(mix) or len(mix) < 2:
        raise ValueError("reference_mix_ids needs two or more different adapter folders")
    key = tuple((str(Path(folder).resolve()), float(weight), _version(folder)) for folder, weight in mix)
    model = _merged_mix(str(Path(model_dir).resolve()), key)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    eos = _eos_ids(model, tokenizer)
    return _greedy_loop(
        model, [int(i) for i in prompt_ids], max_new_tokens, eos, ignore_eos=ignore_eos, recompute=False
    )


@functools.lru_cache(maxsize=2)
def _merged_mix(model_dir: str, mix: tuple[tuple[str, float, tuple[int, int]], ...]) -> Any:
    """The base with peft's "cat" mix of ``mix``'s adapters merged (``mix`` holds each file's version)."""
    base = _load_base(Path(model_dir))  # first: it hides a broken torchvision
    import peft

    names = [f"part{index}" for index in range(len(mix))]
    model = peft.PeftModel.from_pretrained(base, mix[0][0], adapter_name=names[0])
    for name, (folder, _, _) in zip(names[1:], mix[1:]):
        model.load_adapter(folder, adapter_name=name)
    model.add_weighted_adapter(names, [weight for _, weight, _ in mix], "mix", combination_type="cat")
    model.set_adapter("mix")
    merged = model.merge_and_unload(adapter_names=["mix"])
    merged.eval()
    return merged
