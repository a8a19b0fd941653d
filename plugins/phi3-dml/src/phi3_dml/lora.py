"""LoRA on ONNX Runtime GenAI: the graph with adapter inputs, and adapters in the runtime's format.

ONNX Runtime applies an adapter (``og.Adapters`` + ``Generator.set_active_adapter``) by feeding its
tensors, by name, to graph inputs of the same name. The model builder's plain graph has no such
inputs; its own LoRA path (``adapter_path=``) bakes one adapter's weights into the graph and unpacks
the fused projections. So phi3-dml writes, next to every artifact's ``model.onnx``, a second graph
``model.lora.onnx`` (:func:`add_lora_graph`): the same nodes and the same external weight file, plus
for every Phi-3 projection MatMul ``Y = X @ W`` the branch ``Y = X @ W + (X @ lora_A) @ lora_B``.
``lora_A`` ``[in, r]`` and ``lora_B`` ``[r, out]`` are graph inputs whose default initializers have
rank 0 (Olive's ``ExtractAdapters`` ``optional_inputs`` layout), so with no adapter active the
branch adds exact zeros: base generations on this graph give the plain graph's tokens.

Why a second graph and not slots in ``model.onnx``: the branch costs three extra ops per projection
per token (about 500 kernel launches a token on Phi-3-mini) for every user, adapters or not. The
second graph is the graph proto only (the weights stay in the shared ``model.onnx.data``), so a
base artifact serves every adapter and ``phi3 quantize`` takes no new option; ``phi3_load`` picks
``model.lora.onnx`` only when the model is loaded with adapters.

The builder splits Phi-3's fused projections per graph (``qkv_proj`` packed for cpu graphs, separate
``q/k/v_proj`` for fp16; ``gate_up_proj`` always as ``gate_proj`` + ``up_proj``), so each graph
projection takes its rows of the adapter's fused ``B`` (:func:`adapter_tensors`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

LORA_GRAPH = "model.lora.onnx"
ADAPTER_FILE = "adapter.onnx_adapter"
MANIFEST_KEY = "lora"
"""Manifest field: ``{"graph": LORA_GRAPH, "dtype": "float32"|"float16", "layers": N,
"projections": {projection: [in, out]}}``."""

_MATMUL = re.compile(
    r"^/model/layers\.(\d+)/(attn|mlp)/(qkv_proj|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)/MatMul"
)
_ONNX_DTYPES = {1: "float32", 10: "float16"}

FUSED_PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "q_proj": ("qkv_proj", ("q_proj", "k_proj", "v_proj")),
    "k_proj": ("qkv_proj", ("q_proj", "k_proj", "v_proj")),
    "v_proj": ("qkv_proj", ("q_proj", "k_proj", "v_proj")),
    "gate_proj": ("gate_up_proj", ("gate_proj", "up_proj")),
    "up_proj": ("gate_up_proj", ("gate_proj", "up_proj")),
}
"""A graph projection that is part of a fused Phi-3 module -> (the module, its parts in row order)."""

_BLOCK = {"qkv_proj": "self_attn", "o_proj": "self_attn", "gate_up_proj": "mlp", "down_proj": "mlp"}


def input_names(layer: int, projection: str) -> tuple[str, str]:
    """The graph inputs (and adapter tensor names) of one projection's ``lora_A`` and ``lora_B``."""
    base = f"lora.model.layers.{layer}.{projection}"
    return f"{base}.lora_A", f"{base}.lora_B"


def projection_widths(hf_config: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``(in_features, out_features)`` of every projection a builder graph may hold, from config.json."""
    hidden = int(hf_config["hidden_size"])
    heads = int(hf_config["num_attention_heads"])
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    head_dim = int(hf_config.get("head_dim") or hidden // heads)
    inter = int(hf_config["intermediate_size"])
    q, kv = heads * head_dim, kv_heads * head_dim
    return {
        "qkv_proj": (hidden, q + 2 * kv),
        "q_proj": (hidden, q),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (q, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _io_dtype(graph: Any) -> int:
    """The activations' element type (the KV cache inputs carry it)."""
    for value in graph.input:
        if value.name.startswith("past_key_values"):
            return int(value.type.tensor_type.elem_type)
    return 1


def add_lora_graph(folder: Path, hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``model.lora.onnx`` beside ``model.onnx``; return the manifest fields that describe it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    graph = model.graph
    elem = _io_dtype(graph)
    dtype = _ONNX_DTYPES.get(elem)
    if dtype is None:  # a bf16 (cuda) graph: no adapter inputs, loading with adapters is refused
        return {}
    widths = projection_widths(hf_config)
    nodes = list(graph.node)
    del graph.node[:]
    used: dict[str, list[int]] = {}
    layers: set[int] = set()
    for node in nodes:
        match = _MATMUL.match(node.name)
        if match is None:
            graph.node.append(node)
            continue
        layer, projection = int(match.group(1)), match.group(3)
        fan_in, fan_out = widths[projection]
        a, b = input_names(layer, projection)
        rank = f"{a}.rank"
        graph.input.append(helper.make_tensor_value_info(a, elem, [fan_in, rank]))
        graph.input.append(helper.make_tensor_value_info(b, elem, [rank, fan_out]))
        graph.initializer.append(numpy_helper.from_array(np.zeros((fan_in, 0), dtype=dtype), a))
        graph.initializer.append(numpy_helper.from_array(np.zeros((0, fan_out), dtype=dtype), b))
        plain = node.output[0]
        node.output[0] = f"{plain}/without_lora"
        graph.node.extend(  # protobuf copies on append: the renamed node goes in now, its branch after it
            [
                node,
                helper.make_node("MatMul", [node.input[0], a], [f"{a}/output_0"], name=f"/{a}/MatMul"),
                helper.make_node("MatMul", [f"{a}/output_0", b], [f"{b}/output_0"], name=f"/{b}/MatMul"),
                helper.make_node("Add", [node.output[0], f"{b}/output_0"], [plain], name=f"/{a[:-7]}/Add"),
            ]
        )
        used[projection] = [fan_in, fan_out]
        layers.add(layer)
    if not used:
        return {}
    onnx.save(model, str(folder / LORA_GRAPH))  # weights stay external, in model.onnx's own data file
    return {MANIFEST_KEY: {"graph": LORA_GRAPH, "dtype": dtype, "layers": len(layers), "projections": used}}


@dataclass(frozen=True)
class LoraGraph:
    """What an artifact's manifest says about its ``model.lora.onnx``."""

    graph: str
    dtype: str
    layers: int
    projections: dict[str, tuple[int, int]]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LoraGraph | None:
        entry = manifest.get(MANIFEST_KEY)
        if not isinstance(entry, Mapping):
            return None
        try:
            projections = {str(k): (int(v[0]), int(v[1])) for k, v in dict(entry["projections"]).items()}
            return cls(str(entry["graph"]), str(entry["dtype"]), int(entry["layers"]), projections)
        except (KeyError, TypeError, ValueError, IndexError):
            return None


def _rows(projection: str, graph: LoraGraph) -> tuple[str, slice]:
    """The fused Phi-3 module a graph projection belongs to, and its rows of that module's ``B``."""
    if projection not in FUSED_PARTS:
        return projection, slice(None)
    module, parts = FUSED_PARTS[projection]
    start = sum(graph.projections.get(part, (0, 0))[1] for part in parts[: parts.index(projection)])
    return module, slice(start, start + graph.projections[projection][1])


def adapter_tensors(
    weights: Mapping[str, tuple[npt.NDArray[Any], npt.NDArray[Any]]], graph: LoraGraph
) -> dict[str, npt.NDArray[Any]]:
    """The adapter's tensors by graph input name: ``lora_A = A.T`` ``[in, r]``, ``lora_B = B[rows].T`` ``[r, out]``.

    ``weights`` is :meth:`phi3.adapters.LoraAdapter.weights` (HF module path -> (A ``[r, in]``,
    B ``[out, r]``) with the scaling folded into B): ``X @ A.T @ B.T == X @ (B @ A).T``, the delta of
    HF's ``[out, in]`` weight in ONNX's ``[in, out]`` MatMul layout.
    """
    dtype = np.dtype(graph.dtype)
    tensors: dict[str, npt.NDArray[Any]] = {}
    for layer in range(graph.layers):
        for projection in graph.projections:
            module, rows = _rows(projection, graph)
            pair = weights.get(f"model.layers.{layer}.{_BLOCK[module]}.{module}")
            if pair is None:  # not a target of this adapter: the graph's rank-0 default stays
                continue
            a, b = input_names(layer, projection)
            tensors[a] = np.ascontiguousarray(np.asarray(pair[0]).T, dtype=dtype)
            tensors[b] = np.ascontiguousarray(np.asarray(pair[1])[rows].T, dtype=dtype)
    return tensors


def write_adapter(path: Path, tensors: Mapping[str, npt.NDArray[Any]]) -> None:
    """``tensors`` as an ``.onnx_adapter`` file (onnxruntime's ``AdapterFormat``, onnxruntime >= 1.20)."""
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in tensors.items()})
    adapter.export_adapter(str(path))


__all__ = [
    "ADAPTER_FILE",
    "LORA_GRAPH",
    "MANIFEST_KEY",
    "LoraGraph",
    "adapter_tensors",
    "add_lora_graph",
    "input_names",
    "projection_widths",
    "write_adapter",
]
