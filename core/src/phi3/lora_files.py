"""The safetensors files of LoRA adapters, read and written without torch.

peft saves ``adapter_model.safetensors`` in the fine-tune's dtype (fp32, fp16 or bf16). phi3 reads
every tensor itself (the format is an 8-byte header length, a JSON header and raw little-endian data)
so that a truncated or damaged file is one :class:`phi3.errors.AdapterError` before any backend sees
it, and so that bf16 tensors, which numpy has no dtype for, still come back as float32.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3.errors import AdapterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""The safetensors format's own limit on the header."""
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
"""The float dtypes a LoRA adapter's weights come in, and their sizes in bytes."""


@dataclass(frozen=True)
class RawTensor:
    """One tensor's dtype, shape and bytes, exactly as stored."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def to_float32(self) -> npt.NDArray[np.float32]:
        """The tensor as float32 (numpy is imported here: only backends and tests need arrays)."""
        import numpy as np

        if self.dtype == "BF16":  # bf16 is the upper half of a float32
            halves = np.frombuffer(self.data, dtype="<u2").astype(np.uint32) << 16
            values = halves.view(np.float32)
        else:
            values = np.frombuffer(self.data, dtype={"F64": "<f8", "F32": "<f4", "F16": "<f2"}[self.dtype])
        return values.astype(np.float32).reshape(self.shape)


def parse_safetensors(blob: bytes, where: Path) -> dict[str, RawTensor]:
    """Every tensor of a safetensors file's bytes; AdapterError naming ``where`` when it is damaged."""
    fix = "copy the adapter folder again, or save it again with peft's save_pretrained"
    if len(blob) < 8:
        raise AdapterError(f"{where} is truncated (no safetensors header)", hint=fix)
    (length,) = struct.unpack("<Q", blob[:8])
    if length > MAX_HEADER_BYTES or 8 + length > len(blob):
        raise AdapterError(f"{where} is truncated or not a safetensors file", hint=fix)
    try:
        header = json.loads(blob[8 : 8 + length])
    except (ValueError, UnicodeDecodeError):
        raise AdapterError(f"{where} has a corrupt safetensors header", hint=fix) from None
    if not isinstance(header, dict):
        raise AdapterError(f"{where} has a corrupt safetensors header", hint=fix)
    data = blob[8 + length :]
    tensors: dict[str, RawTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = str(info["dtype"]), tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise AdapterError(f"{where} has a corrupt entry for tensor {name!r}", hint=fix) from None
        if dtype not in ITEM_SIZES:
            raise AdapterError(f"{where}: tensor {name!r} is {dtype}, not a float type a LoRA weight has", hint=fix)
        count = 1
        for dim in shape:
            count *= dim
        if end > len(data):
            raise AdapterError(
                f"{where} is truncated: tensor {name!r} ends at byte {8 + length + end}, the file has {len(blob)}",
                hint=fix,
            )
        if end - start != count * ITEM_SIZES[dtype] or start < 0:
            raise AdapterError(f"{where} has a corrupt entry for tensor {name!r}", hint=fix)
        tensors[name] = RawTensor(dtype, shape, data[start:end])
    return tensors


def write_safetensors(path: Path, tensors: Mapping[str, Any]) -> None:
    """Write float32 numpy arrays as a safetensors file (keys sorted, as the safetensors package does)."""
    import numpy as np

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        raw = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for raw in chunks:
            fh.write(raw)


__all__ = ["RawTensor", "parse_safetensors", "write_safetensors"]
