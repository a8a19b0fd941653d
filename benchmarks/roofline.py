"""Memory bandwidth and bytes read per decoded token: the decode roofline.

Decoding one token with batch size 1 multiplies the current hidden state by every weight matrix
once, so every weight byte is read from memory once per token (the weights are far larger than
the CPU caches). The exception is the token-embedding table: a lookup reads one row of it, not
the table. So::

    bytes per token  = all weight bytes in the artifact - embedding table bytes  (+ KV cache reads)
    roofline tok/s   = read bandwidth / bytes per token

No engine can decode faster than that on this machine; ``measured / roofline`` is how much of the
memory system an engine uses. The KV cache is read too (2 x layers x kv heads x head size x
context x bytes per element); it is reported separately because its precision is an engine-internal
choice that the artifact does not record.

Weight bytes are counted from the artifact files themselves, in each format's own terms (OpenVINO
IR constants, ONNX initializers, GGUF tensors, safetensors tensors), so quantization scales and
zero points are included and nothing is estimated from parameter counts.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WeightBytes:
    total: int
    embedding: int
    how: str

    @property
    def per_token(self) -> int:
        return self.total - self.embedding


# -- bandwidth --------------------------------------------------------------------------------


def measure_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Memory bandwidth of this machine: a large array copy, and a large matrix-vector product.

    Copy, STREAM-style: (bytes read + bytes written) / time. It understates what reads alone
    reach (each written line is also read first, and writes compete with reads), so the decode
    roofline uses the read figure: an fp32 matrix-vector product over the same 1 GiB, the exact
    access pattern of batch-1 decoding.

    ``threads`` threads (default: every CPU this process may use) each copy their own slice of a
    ``size_bytes`` array into another (numpy releases the GIL while copying); the best of
    ``repeats`` copies counts, as in STREAM.
    """
    import numpy as np

    threads = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    n = size_bytes // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    bounds = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def parallel(work: Any) -> float:
        workers = [threading.Thread(target=work, args=(a, b)) for a, b in bounds]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - start

    def copy(a: int, b: int) -> None:
        np.copyto(dst[a:b], src[a:b])

    parallel(copy)  # first touch: page faults, not bandwidth
    copy_s = min(parallel(copy) for _ in range(repeats))
    # Read bandwidth the way decoding reads weights: a matrix-vector product over the same bytes
    # (numpy's BLAS, all cores). 2 flops per 4 bytes read is far below what the cores can compute,
    # so the time is the time to stream the matrix from memory.
    matrix = src.view(np.float32).reshape(-1, 4096)
    vector = np.ones(4096, dtype=np.float32)
    matrix @ vector
    gemv_s = min(_timed(lambda: matrix @ vector) for _ in range(repeats))
    return {
        "copy_bytes_per_s": 2 * n * 8 / copy_s,
        "read_bytes_per_s": n * 8 / gemv_s,
        "array_bytes": n * 8,
        "threads": threads,
        "repeats": repeats,
    }


def _timed(work: Any) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# -- bytes per token, per artifact format -----------------------------------------------------

_PASS_THROUGH = {"Convert", "Subtract", "Multiply", "Reshape", "Unsqueeze", "Transpose", "Squeeze", "Concat"}


def openvino_ir(folder: Path) -> WeightBytes:
    """Sum of the IR's constants; the embedding is whatever feeds a Gather (through decompression ops)."""
    root = ET.parse(folder / "openvino_model.xml").getroot()
    layers = {layer.get("id"): layer for layer in root.iter("layer")}
    consumers: dict[str | None, list[str | None]] = {}
    for edge in root.iter("edge"):
        consumers.setdefault(edge.get("from-layer"), []).append(edge.get("to-layer"))

    def feeds_gather(layer_id: str | None, depth: int = 0) -> bool:
        for nxt in consumers.get(layer_id, []):
            kind = layers[nxt].get("type")
            if kind == "Gather":
                return True
            if kind in _PASS_THROUGH and depth < 8 and feeds_gather(nxt, depth + 1):
                return True
        return False

    total = embedding = 0
    for layer_id, layer in layers.items():
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        size = int(data.get("size", 0)) if data is not None else 0
        total += size
        if size > 4096 and feeds_gather(layer_id):
            embedding += size
    return WeightBytes(total, embedding, "OpenVINO IR constants; embedding = constants feeding a Gather")


def onnx_model(folder: Path) -> WeightBytes:
    """Sum of the ONNX initializers; the embedding is what feeds a Gather/GatherBlockQuantized."""
    import onnx
    from onnx import helper

    genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
    model = onnx.load(str(folder / genai["model"]["decoder"]["filename"]), load_external_data=False)
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def size_of(init: Any) -> int:
        for entry in init.external_data:
            if entry.key == "length":
                return int(entry.value)
        if init.raw_data:
            return len(init.raw_data)
        count = 1
        for d in init.dims:
            count *= int(d)
        return count * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize

    def feeds_gather(name: str, depth: int = 0) -> bool:
        for node in consumers.get(name, []):
            if node.op_type in ("Gather", "GatherBlockQuantized"):
                return True
            if (
                node.op_type in ("DequantizeLinear", "Cast", "Reshape", "Transpose")
                and depth < 4
                and any(feeds_gather(out, depth + 1) for out in node.output)
            ):
                return True
        return False

    total = embedding = 0
    for init in graph.initializer:
        size = size_of(init)
        total += size
        if size > 4096 and feeds_gather(init.name):
            embedding += size
    return WeightBytes(total, embedding, "ONNX initializers; embedding = initializers feeding a Gather")


def gguf_file(path: Path, gguf_py: Path | None = None) -> WeightBytes:
    """Sum of the GGUF tensors; the embedding is ``token_embd.weight``."""
    import sys

    if gguf_py is not None and str(gguf_py) not in sys.path:
        sys.path.insert(0, str(gguf_py))
    from gguf import GGUFReader

    total = embedding = 0
    for tensor in GGUFReader(str(path)).tensors:
        total += int(tensor.n_bytes)
        if tensor.name == "token_embd.weight":
            embedding += int(tensor.n_bytes)
    return WeightBytes(total, embedding, "GGUF tensors; embedding = token_embd.weight")


def safetensors_folder(folder: Path) -> WeightBytes:
    """Sum of the safetensors tensors; the embedding is ``model.embed_tokens.weight``."""
    total = embedding = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            total += end - start
            if name.endswith("embed_tokens.weight"):
                embedding += end - start
    return WeightBytes(total, embedding, "safetensors tensors; embedding = embed_tokens.weight")


def kv_cache_bytes_per_token(config: dict[str, Any], context: float, bytes_per_element: float) -> float:
    """KV-cache bytes read to decode one token at ``context`` tokens of history."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config["hidden_size"]) // heads
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * context * bytes_per_element


__all__ = [
    "WeightBytes",
    "gguf_file",
    "kv_cache_bytes_per_token",
    "measure_bandwidth",
    "onnx_model",
    "openvino_ir",
    "safetensors_folder",
]
