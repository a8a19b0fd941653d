"""Write a GGUF LoRA adapter with llama.cpp's own ``gguf`` package (a subprocess entry).

    python -m phi3_llamacpp.lora_driver SOURCES BASE.gguf WEIGHTS.npz OUT.gguf

``SOURCES`` is the converter folder of :mod:`phi3_llamacpp.converter` (its ``gguf-py`` matches the
installed llama.cpp). ``WEIGHTS.npz`` holds ``<gguf tensor>.lora_a`` (``[r, in]``) and
``.lora_b`` (``[out, r]``) float32 arrays, peft's scaling already in B. The file is what llama.cpp's
``convert_lora_to_gguf.py`` writes (``general.type = adapter``, ``adapter.type = lora``, the base's
``general.architecture``, A and B as numpy ``[r, in]`` / ``[out, r]``, i.e. ggml ``ne = [in, r]`` /
``[r, out]``) except ``adapter.lora.alpha = 0``: llama.cpp then scales each pair by the scale
given per context alone (``llama_adapter_lora_weight::get_scale``), so scale 1 applies ``B @ A``.

Every tensor is checked against the base GGUF first; a mismatch exits with code 2 and one line on
stderr naming the tensor (the parent raises it as an AdapterError).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

MISMATCH_EXIT = 2


def _check(reader: Any, weights: Any) -> str | None:
    """The first problem of ``weights`` against the base GGUF's tensors, or None."""
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: (in, out)
    for key in weights.files:
        if not key.endswith(".lora_a"):
            continue
        name = key[: -len(".lora_a")]
        a, b = weights[key], weights[name + ".lora_b"]
        if name not in shapes:
            return f"the base GGUF has no tensor {name}"
        want = shapes[name]
        if a.shape[1] != want[0] or b.shape[0] != want[1] or a.shape[0] != b.shape[1]:
            return f"{name}: LoRA A {list(a.shape)} / B {list(b.shape)} do not fit the base's [out, in] {[*want[::-1]]}"
    return None


def main(argv: list[str]) -> int:
    sources, base, npz, out = (Path(arg) for arg in argv[:4])
    sys.path.insert(0, str(sources / "gguf-py"))
    gguf = importlib.import_module("gguf")
    import numpy as np

    reader = gguf.GGUFReader(str(base))
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    arch = str(arch_field.contents()) if arch_field is not None else "phi3"
    with np.load(npz) as weights:
        problem = _check(reader, weights)
        if problem:
            print(problem, file=sys.stderr)
            return MISMATCH_EXIT
        writer = gguf.GGUFWriter(str(out), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
        for key in sorted(weights.files):
            writer.add_tensor(key, np.ascontiguousarray(weights[key], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
