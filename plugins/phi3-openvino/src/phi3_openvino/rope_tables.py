"""Keep the RoPE tables of an fp16 IR in f32: the inverse frequencies and the LongRoPE factors.

optimum-intel 2.2.0 exports fp16 by saving the traced model with OpenVINO's whole-model
``compress_to_fp16`` (``optimum.exporters.openvino.convert``: ``OVConfig(dtype="fp16")``); it has no
per-op option to keep some constants in f32, and NNCF's ``ignored_scope`` only concerns weight
compression (int4/int8), not this step. The rotary embedding's constant tables are then stored in
fp16 too: ``base ** (2i / dim)`` (or its inverse), LongRoPE's ``short_factor`` and ``long_factor``.
Their relative error (~5e-4) multiplies the position, so the angles drift with the position: at
position 100k of a 128k model that is tens of radians. Weights may be fp16; these tables must not.

:func:`restore_rope_tables` finds, in the saved IR, each fp16 Constant of the rotary embedding
(``rotary_emb`` in its name, followed by a Convert to f32) whose values are one of those tables
rounded to fp16, and replaces it with an f32 Constant holding the checkpoint's exact values (computed
from config.json as transformers computes them). A constant that matches no table is left alone, so
the worst case is "nothing restored", never a wrong table. Checked with openvino 2026.4.1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROTARY_SCOPE = "rotary_emb"


def rope_tables(config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's rotary tables in float32, by name, as transformers computes them."""
    import numpy as np

    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope = rope if isinstance(rope, dict) else {}
    theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    partial = float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) or 1.0)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    dim = int(head_dim * partial)
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    power = np.power(np.float32(theta), exponents, dtype=np.float32)
    tables = {"base ** (2i/dim)": power, "inv_freq": (np.float32(1.0) / power).astype(np.float32)}
    for key in ("short_factor", "long_factor"):
        if isinstance(rope.get(key), list):
            tables[key] = np.asarray(rope[key], dtype=np.float32)
    return tables


def _match(values: Any, tables: dict[str, Any]) -> str | None:
    import numpy as np

    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    for name, table in tables.items():
        # the stored values must be the table rounded to fp16: exactly what compression does
        if table.size == flat.size and np.array_equal(table.astype(np.float16).astype(np.float32), flat):
            return name
    return None


def restore_rope_tables(model_xml: Path, config: dict[str, Any]) -> list[str]:
    """Rewrite ``model_xml`` (+ .bin) with its fp16 rotary tables in f32; return the tables restored."""
    import numpy as np
    import openvino as ov

    tables = rope_tables(config)
    model = ov.Core().read_model(str(model_xml))
    restored: list[str] = []
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or ROTARY_SCOPE not in op.get_friendly_name():
            continue
        if op.get_output_element_type(0) != ov.Type.f16:
            continue
        name = _match(op.get_data(), tables)
        consumers = [target.get_node() for target in op.output(0).get_target_inputs()]
        if name is None or not consumers or any(c.get_type_name() != "Convert" for c in consumers):
            continue
        exact = ov.op.Constant(np.ascontiguousarray(tables[name].reshape(list(op.get_output_shape(0)))))
        exact.set_friendly_name(op.get_friendly_name().removesuffix("_compressed"))
        for convert in consumers:
            if convert.get_output_element_type(0) != ov.Type.f32:
                break
            convert.output(0).replace(exact.output(0))
        else:
            restored.append(name)
    if restored:
        tmp_xml = model_xml.with_name(model_xml.stem + ".rope-tmp.xml")
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        del model
        os.replace(tmp_xml.with_suffix(".bin"), model_xml.with_suffix(".bin"))
        os.replace(tmp_xml, model_xml)
    return sorted(restored)


def read_config(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


__all__ = ["restore_rope_tables", "rope_tables"]
