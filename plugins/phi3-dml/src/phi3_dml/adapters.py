"""phi3's LoRA contract on ONNX Runtime GenAI: convert a peft adapter, pick the graph, load adapters.

``phi3_convert_adapter`` (:func:`convert`) writes the adapter as an ``.onnx_adapter`` file for one
base artifact (phi3 caches it by artifact key and adapter hash); ``phi3_load`` opens the artifact's
``model.lora.onnx`` (:mod:`phi3_dml.lora`) when it is given adapters (:func:`graph_for`) and loads
every one into one ``og.Adapters`` (:func:`load_all`); each generation activates the one its
config names (:mod:`phi3_dml.generate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3.cache import rebuild_hint
from phi3.errors import AdapterError, BackendUnavailableError
from phi3.types import Artifact, Progress

from phi3_dml import lora

if TYPE_CHECKING:
    from phi3.adapters import LoraAdapter, PreparedAdapter


def _lora_graph(artifact: Artifact) -> lora.LoraGraph:
    """The artifact's adapter-ready graph, or AdapterError naming the rebuild."""
    graph = lora.LoraGraph.from_manifest(artifact.manifest)
    if graph is None or not (artifact.path / graph.graph).is_file():
        raise AdapterError(
            f"the dml artifact {artifact.key[:12]} has no graph with LoRA inputs "
            f"({lora.LORA_GRAPH}; artifacts built before phi3-dml 0.3, and bf16 graphs, have none)",
            hint="use -p fp16 or int4"
            if artifact.precision == "bf16"
            else f"rebuild it: {rebuild_hint(artifact.path)}",
        )
    return graph


def convert(artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress) -> dict[str, Any]:
    """Write ``adapter`` for this artifact's graph as ``output_dir/adapter.onnx_adapter``."""
    graph = _lora_graph(artifact)
    if adapter.num_layers != graph.layers:
        raise AdapterError(
            f"adapter {adapter.name!r} has {adapter.num_layers} layers but this dml artifact has {graph.layers}",
            hint="use an adapter trained on this base model",
        )
    progress(f"converting LoRA adapter {adapter.name!r} to an ONNX Runtime adapter ({graph.dtype})")
    tensors = lora.adapter_tensors(adapter.weights(), graph)
    try:
        lora.write_adapter(output_dir / lora.ADAPTER_FILE, tensors)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"writing an ONNX Runtime adapter needs onnxruntime >= 1.20 (AdapterFormat): {exc}",
            hint="pip install -U onnxruntime (onnxruntime-directml on Windows)",
        ) from None
    return {"adapter_file": lora.ADAPTER_FILE, "adapter_dtype": graph.dtype, "adapter_tensors": len(tensors)}


def graph_for(artifact: Artifact, adapters: Mapping[str, PreparedAdapter]) -> str | None:
    """The decoder file to load: the artifact's LoRA graph when there are adapters, else its own."""
    return _lora_graph(artifact).graph if adapters else None


def load_all(og: Any, model: Any, adapters: Mapping[str, PreparedAdapter]) -> Any:
    """One ``og.Adapters`` holding every adapter by name (None when there are none)."""
    if not adapters:
        return None
    loaded = og.Adapters(model)
    for name, prepared in adapters.items():
        path = (prepared.path or Path()) / lora.ADAPTER_FILE
        if prepared.path is None or not path.is_file():
            raise AdapterError(
                f"adapter {name!r} has no converted ONNX Runtime file ({path})",
                hint="phi3 converts adapters when loading; remove the cached conversion with phi3 cache rm and retry",
            )
        try:
            loaded.load(str(path), name)
        except RuntimeError as exc:
            raise AdapterError(
                f"onnxruntime-genai cannot load adapter {name!r} ({path}): {' '.join(str(exc).split())}",
                hint="remove the cached conversion with phi3 cache rm and load again",
            ) from exc
    return loaded


__all__ = ["convert", "graph_for", "load_all"]
