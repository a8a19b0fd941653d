"""LoRA adapters: a peft folder read, checked against the base model, and normalised once for every backend.

Fine-tunes of Phi-3 (the cookbook's recipes, Azure AI Studio, peft) ship as a peft folder:
``adapter_config.json`` + ``adapter_model.safetensors``. phi3 reads it here, before any slow step, and
refuses with one :class:`phi3.errors.AdapterError` what no backend can apply correctly: another peft
type (IA3, LoHa ...), DoRA, ``modules_to_save`` (whole replaced layers), targets other than the
decoder's linear layers, shapes or a layer count of another base, a damaged file.

Backends then see one shape whatever the fine-tune looked like (:meth:`LoraAdapter.weights`): per
base module, ``(A, B)`` in float32 with peft's scaling folded into ``B``, so the adapted weight is
``W + B @ A``. Llama-style fine-tunes that adapt ``q_proj``/``k_proj``/``v_proj`` or
``gate_proj``/``up_proj`` separately are fused onto Phi-3's ``qkv_proj`` / ``gate_up_proj``.
Runtimes that read peft folders get a canonical one from :func:`write_peft_folder`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3.errors import AdapterError
from phi3.lora_files import RawTensor, parse_safetensors, write_safetensors

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SUPPORTED_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
"""Phi-3's decoder linear layers, the modules an adapter may target."""
FUSED_PARTS = {"q_proj": 0, "k_proj": 1, "v_proj": 2, "gate_proj": 0, "up_proj": 1}
"""Separately adapted projections and their block in the fused Phi-3 module."""
FUSED_INTO = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj"}
FUSED_INTO["up_proj"] = "gate_up_proj"
_SECTION = {"qkv_proj": "self_attn", "o_proj": "self_attn", "gate_up_proj": "mlp", "down_proj": "mlp"}
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_FIX_BASE = "use an adapter trained on this base model, or load the base model it was trained on"


@dataclass(frozen=True)
class _Part:
    """One LoRA (A, B) pair of a possibly fused module: ``block`` is its output block."""

    block: int
    a: RawTensor
    b: RawTensor
    scale: float


@dataclass(frozen=True)
class _Module:
    blocks: tuple[int, ...]
    """Output widths of the fused module's blocks (q, k, v / gate, up), or the one full width."""
    parts: tuple[_Part, ...]


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter checked against a base model's config (make it with :func:`read_lora_adapter`)."""

    name: str
    path: Path
    """The user's peft folder."""
    content_hash: str
    """sha256 (hex) of ``adapter_config.json``'s bytes followed by ``adapter_model.safetensors``'s."""
    rank: int
    """The largest rank of the normalised modules (a fused q/k/v module has the ranks' sum)."""
    target_modules: tuple[str, ...]
    """The Phi-3 modules it adapts, in :data:`SUPPORTED_TARGETS` order."""
    base_model: str | None
    """``base_model_name_or_path`` from ``adapter_config.json``."""
    num_layers: int
    """The base model's decoder layers (the adapter may touch fewer)."""
    modules: Mapping[str, _Module] = field(default_factory=dict, repr=False, compare=False, hash=False)
    mix: tuple[tuple[LoraAdapter, float], ...] = ()
    """For a weighted mix (:func:`mix_lora_adapters`): its components and their weights; else empty."""

    def weights(self) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        """Per base module (``"model.layers.0.self_attn.qkv_proj"``): ``(A [r, in], B [out, r])``,
        float32, peft's scaling folded into B, so the adapted weight is exactly ``W + B @ A``."""
        import numpy as np

        if self.mix:
            return _mixed_weights(self.mix)
        result: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}
        for key, module in self.modules.items():
            a_parts = [part.a.to_float32() for part in module.parts]
            a = np.vstack(a_parts).astype(np.float32)
            b = np.zeros((sum(module.blocks), a.shape[0]), dtype=np.float32)
            column = 0
            for part, a_part in zip(module.parts, a_parts):
                row = sum(module.blocks[: part.block])
                rank = a_part.shape[0]
                b[row : row + module.blocks[part.block], column : column + rank] = part.b.to_float32() * part.scale
                column += rank
            result[key] = (a, b)
        return result


def _mixed_weights(
    mix: tuple[tuple[LoraAdapter, float], ...],
) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """``sum_i w_i B_i A_i`` as one LoRA: the A's stacked along the rank, the weighted B's side by side."""
    import numpy as np

    parts: dict[str, list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]] = {}
    for adapter, weight in mix:
        for key, (a, b) in adapter.weights().items():
            parts.setdefault(key, []).append((a, (b * np.float32(weight)).astype(np.float32)))
    return {
        key: (np.vstack([a for a, _ in pairs]).astype(np.float32), np.hstack([b for _, b in pairs]).astype(np.float32))
        for key, pairs in parts.items()
    }


def mix_lora_adapters(name: str, components: Sequence[tuple[LoraAdapter, float]]) -> LoraAdapter:
    """The weighted mix ``W + sum_i w_i B_i A_i`` of ``components`` as one ordinary LoRA adapter.

    A weighted sum of low-rank updates is itself a low-rank update whose rank is the sum of the ranks
    (A's concatenated along the rank axis, ``w_i * B_i`` side by side; a module one component does not
    adapt gets nothing from it), so every backend applies a mix exactly, through the same conversion
    and runtime path as any adapter, whether or not its runtime blends adapters itself. The content
    hash covers the components' hashes and the exact weights, so a changed component or weight
    converts again. ``path`` is the first component's folder. The components must be plain adapters
    of one base (:func:`phi3.adapter_loading.check_adapter_specs` checks the weights).
    """
    if not components or any(adapter.mix for adapter, _ in components):
        raise AdapterError(f"adapter {name!r}: a mix needs plain adapters", hint="mix adapters loaded from folders")
    digest = hashlib.sha256(b"phi3-lora-mix-v1")
    ranks: dict[str, int] = {}
    for adapter, weight in components:
        digest.update(f"{adapter.content_hash}*{float(weight).hex()}+".encode())
        for key, module in adapter.modules.items():
            ranks[key] = ranks.get(key, 0) + sum(part.a.shape[0] for part in module.parts)
    first = components[0][0]
    targets = {target for adapter, _ in components for target in adapter.target_modules}
    return LoraAdapter(
        name=name,
        path=first.path,
        content_hash=digest.hexdigest(),
        rank=max(ranks.values()),
        target_modules=tuple(t for t in SUPPORTED_TARGETS if t in targets),
        base_model=first.base_model,
        num_layers=first.num_layers,
        mix=tuple((adapter, float(weight)) for adapter, weight in components),
    )


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter as a backend's ``phi3_load`` receives it (``LoadRequest.adapters``)."""

    adapter: LoraAdapter
    path: Path | None
    """The folder the backend's ``phi3_convert_adapter`` wrote (in phi3's cache); None without that hook."""
    manifest: Mapping[str, Any] = field(default_factory=dict)
    """What the conversion returned (empty without the hook)."""


def _module_shapes(base_config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Output block widths and input width of each adaptable module: ``(*blocks, in)``."""
    try:
        hidden, inter = int(base_config["hidden_size"]), int(base_config["intermediate_size"])
        heads = int(base_config["num_attention_heads"])
        kv = int(base_config.get("num_key_value_heads") or heads)
        head_dim = int(base_config.get("head_dim") or hidden // heads)
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"the base model's config.json lacks {exc}", hint="load a Phi-3 checkpoint") from None
    return {
        "qkv_proj": (heads * head_dim, kv * head_dim, kv * head_dim, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_up_proj": (inter, inter, hidden),
        "down_proj": (hidden, inter),
    }


def _read_files(name: str, path: Path) -> tuple[dict[str, Any], bytes, str]:
    """adapter_config.json (parsed), the weights' bytes and the content hash."""
    if not path.is_dir():
        raise AdapterError(f"adapter {name!r}: {path} is not a folder", hint="pass a peft adapter folder")
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file():
        raise AdapterError(f"adapter {name!r}: {path} has no {CONFIG_FILE}", hint="pass a peft LoRA adapter folder")
    if not weights_path.is_file():
        hint = "save it with safetensors (peft's save_pretrained does by default)"
        if (path / "adapter_model.bin").is_file():
            raise AdapterError(f"adapter {name!r}: {path} holds adapter_model.bin, not safetensors", hint=hint)
        raise AdapterError(f"adapter {name!r}: {path} has no {WEIGHTS_FILE}", hint=hint)
    try:
        config_bytes, blob = config_path.read_bytes(), weights_path.read_bytes()
        config = json.loads(config_bytes)
    except OSError as exc:
        raise AdapterError(f"adapter {name!r}: cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise AdapterError(
            f"adapter {name!r}: {config_path} is not valid JSON", hint="save it again with peft"
        ) from None
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {name!r}: {config_path} is not a JSON object", hint="save it again with peft")
    digest = hashlib.sha256(config_bytes)
    digest.update(blob)
    return config, blob, digest.hexdigest()


def _check_config(name: str, config: Mapping[str, Any]) -> None:
    """Refuse peft settings whose effect phi3's normalised LoRA cannot express."""
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise AdapterError(
            f"adapter {name!r} is a {config.get('peft_type') or 'non-peft'} adapter; phi3 applies LoRA adapters only",
            hint="train a LoRA adapter (peft LoraConfig), or merge this one into the model with peft",
        )
    merge = "merge it into the base model with peft's merge_and_unload and load the merged checkpoint"
    if config.get("use_dora"):
        raise AdapterError(f"adapter {name!r} is a DoRA adapter (use_dora); phi3 applies plain LoRA only", hint=merge)
    if config.get("modules_to_save"):
        raise AdapterError(
            f"adapter {name!r} replaces whole modules (modules_to_save: {config['modules_to_save']}); "
            "phi3 applies low-rank updates only",
            hint=merge,
        )
    for flag in ("lora_bias", "fan_in_fan_out"):
        if config.get(flag):
            raise AdapterError(f"adapter {name!r} sets {flag}, which phi3 does not apply", hint=merge)
    targets = config.get("target_modules")
    if isinstance(targets, list):
        known = (*SUPPORTED_TARGETS, *FUSED_PARTS)
        bad = sorted({str(t).rsplit(".", 1)[-1] for t in targets} - set(known))
        if bad:
            raise AdapterError(
                f"adapter {name!r} targets {', '.join(bad)}; phi3 adapts only {', '.join(SUPPORTED_TARGETS)} "
                "(or q/k/v_proj, gate/up_proj)",
                hint=f"train the adapter on those modules only, or {merge}",
            )


def _check_base_model(name: str, adapter_base: object, base_model_id: str | None) -> None:
    """A hub id in ``base_model_name_or_path`` must name the loaded hub model (local copies are not compared)."""
    from phi3.sources import HUB_ID

    if not isinstance(adapter_base, str) or base_model_id is None:
        return
    if not (HUB_ID.match(adapter_base) and HUB_ID.match(base_model_id)):
        return
    if Path(adapter_base).expanduser().exists():
        return
    if adapter_base.lower() != base_model_id.lower():
        raise AdapterError(
            f"adapter {name!r} was trained on {adapter_base}, not on the loaded model {base_model_id}",
            hint=f"load {adapter_base} as the base model, or use an adapter trained on {base_model_id}",
        )


def _scale(config: Mapping[str, Any], module_key: str, rank: int) -> float:
    """peft's scaling for one module: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), patterns honoured."""

    def pattern_value(patterns: object, default: object) -> object:
        if isinstance(patterns, Mapping):
            for pattern, value in patterns.items():
                if re.match(rf"(.*\.)?({pattern})$", module_key):
                    return value
        return default

    r = int(pattern_value(config.get("rank_pattern"), config.get("r", 8)))  # type: ignore[call-overload]
    alpha = float(pattern_value(config.get("alpha_pattern"), config.get("lora_alpha", 8)))  # type: ignore[arg-type]
    if r != rank:
        raise AdapterError(f"{module_key}: adapter_config.json says rank {r}, its weights have rank {rank}")
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _group_tensors(
    name: str, tensors: Mapping[str, RawTensor], num_layers: int
) -> dict[tuple[int, str], dict[str, Any]]:
    """(layer, module name as saved) -> {"A": tensor, "B": tensor}; anything else is refused."""
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        module = match.group(2) if match else None
        if match is None or module not in (*SUPPORTED_TARGETS, *FUSED_PARTS):
            raise AdapterError(
                f"adapter {name!r} holds {key}, which phi3 cannot apply; it adapts only the decoder's "
                f"{', '.join(SUPPORTED_TARGETS)}",
                hint="train the adapter on those modules only, or merge it into the model with peft",
            )
        layer = int(match.group(1))
        if layer >= num_layers:
            raise AdapterError(
                f"adapter {name!r} adapts layer {layer}; the base model has {num_layers} layers", hint=_FIX_BASE
            )
        groups.setdefault((layer, str(module)), {})[match.group(3)] = tensor
    for (layer, module), pair in groups.items():
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {name!r}: layer {layer} {module} lacks lora_A or lora_B", hint=_FIX_BASE)
    if not groups:
        raise AdapterError(f"adapter {name!r} holds no LoRA weights", hint="save the adapter again with peft")
    return groups


def _build_modules(
    name: str, config: Mapping[str, Any], groups: Mapping[tuple[int, str], Mapping[str, RawTensor]], shapes: Any
) -> dict[str, _Module]:
    """The normalised modules, every shape checked against the base."""
    parts: dict[str, list[_Part]] = {}
    for (layer, saved), pair in sorted(groups.items()):
        target = FUSED_INTO.get(saved, saved)
        *blocks, width_in = shapes[target]
        block = FUSED_PARTS.get(saved, 0)
        width_out = blocks[block] if saved in FUSED_PARTS else sum(blocks)
        a, b = pair["A"], pair["B"]
        rank = a.shape[0] if len(a.shape) == 2 else -1
        if a.shape != (rank, width_in) or b.shape != (width_out, rank) or rank < 1:
            raise AdapterError(
                f"adapter {name!r}: layer {layer} {saved} has lora_A {list(a.shape)} and lora_B {list(b.shape)}; "
                f"this base model needs [r, {width_in}] and [{width_out}, r], so it was trained on another base",
                hint=_FIX_BASE,
            )
        key = f"model.layers.{layer}.{_SECTION[target]}.{target}"
        scale = _scale(config, f"model.layers.{layer}.{_SECTION[target]}.{saved}", rank)
        parts.setdefault(key, []).append(_Part(block if saved in FUSED_PARTS else -1, a, b, scale))
    modules: dict[str, _Module] = {}
    for key, found in parts.items():
        blocks = tuple(shapes[key.rsplit(".", 1)[1]][:-1])
        whole = [part for part in found if part.block == -1]
        if whole and len(found) > 1:
            raise AdapterError(f"adapter {name!r} adapts {key} both whole and in parts", hint=_FIX_BASE)
        if whole:
            modules[key] = _Module((sum(blocks),), (_Part(0, whole[0].a, whole[0].b, whole[0].scale),))
        else:
            modules[key] = _Module(blocks, tuple(sorted(found, key=lambda part: part.block)))
    return modules


def read_lora_adapter(
    name: str, path: Path, base_config: Mapping[str, Any], *, base_model_id: str | None = None
) -> LoraAdapter:
    """Read the peft folder ``path`` and check it against the base's ``config.json`` (as a dict).

    ``base_model_id`` (the loaded model's hub id, if it has one) is compared with the adapter's
    ``base_model_name_or_path`` when that names a hub model. Every tensor is read, so a damaged file
    fails here. Raises :class:`AdapterError`.
    """
    path = Path(path)
    config, blob, content_hash = _read_files(name, path)
    _check_config(name, config)
    _check_base_model(name, config.get("base_model_name_or_path"), base_model_id)
    shapes = _module_shapes(base_config)
    num_layers = int(base_config.get("num_hidden_layers") or 0)
    tensors = parse_safetensors(blob, path / WEIGHTS_FILE)
    modules = _build_modules(name, config, _group_tensors(name, tensors, num_layers), shapes)
    targets = {key.rsplit(".", 1)[1] for key in modules}
    base = config.get("base_model_name_or_path")
    return LoraAdapter(
        name=name,
        path=path,
        content_hash=content_hash,
        rank=max(sum(part.a.shape[0] for part in module.parts) for module in modules.values()),
        target_modules=tuple(t for t in SUPPORTED_TARGETS if t in targets),
        base_model=base if isinstance(base, str) and base else None,
        num_layers=num_layers,
        modules=modules,
    )


def write_peft_folder(adapter: LoraAdapter, out: Path) -> Path:
    """Write ``adapter`` as a canonical peft LoRA folder at ``out`` (created if missing) and return it.

    Fused Phi-3 module names, one rank for every module (smaller ones padded with zero rows/columns,
    which adds nothing to ``B @ A``) and ``lora_alpha == r`` so peft's scaling is 1: B already holds it.
    For runtimes that read peft folders (OpenVINO GenAI's ``Adapter``, ORT GenAI's builder, peft).
    """
    import numpy as np

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank = adapter.rank
    tensors: dict[str, Any] = {}
    for key, (a, b) in adapter.weights().items():
        padded_a = np.zeros((rank, a.shape[1]), dtype=np.float32)
        padded_b = np.zeros((b.shape[0], rank), dtype=np.float32)
        padded_a[: a.shape[0]], padded_b[:, : b.shape[1]] = a, b
        tensors[f"base_model.model.{key}.lora_A.weight"] = padded_a
        tensors[f"base_model.model.{key}.lora_B.weight"] = padded_b
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": list(adapter.target_modules),
        "base_model_name_or_path": adapter.base_model,
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    write_safetensors(out / WEIGHTS_FILE, tensors)
    return out


__all__ = [
    "CONFIG_FILE",
    "SUPPORTED_TARGETS",
    "WEIGHTS_FILE",
    "LoraAdapter",
    "PreparedAdapter",
    "mix_lora_adapters",
    "read_lora_adapter",
    "write_peft_folder",
]
