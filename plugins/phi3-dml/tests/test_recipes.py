"""Build options that shape the int4 recipe really reach the graph (benchmarks/TUNING.md measures them)."""

from __future__ import annotations

from pathlib import Path

import phi3


def _matmul_bits(artifact: Path) -> dict[str, int]:
    """MatMulNBits node name -> its weight bits, read from the artifact's ONNX graph."""
    import onnx

    graph = onnx.load(str(artifact / "model.onnx"), load_external_data=False).graph
    return {
        node.name: next(int(a.i) for a in node.attribute if a.name == "bits")
        for node in graph.node
        if node.op_type == "MatMulNBits"
    }


def test_lm_head_int8_keeps_only_the_output_projection_at_int8(load_dml: object, tiny_phi3: Path) -> None:
    default = phi3.quantize(tiny_phi3, backend="dml", precision="int4")
    int8_head = phi3.quantize(tiny_phi3, backend="dml", precision="int4", lm_head="int8")
    assert default.key != int8_head.key
    plain, mixed = _matmul_bits(default.path), _matmul_bits(int8_head.path)
    assert set(plain.values()) == {4}
    heads = [name for name in mixed if "lm_head" in name]
    assert heads and all(mixed[name] == 8 for name in heads), mixed
    assert all(bits == 4 for name, bits in mixed.items() if name not in heads)
    assert int8_head.manifest["lm_head"] == "int8" and default.manifest["lm_head"] == "int4"
    with phi3.load(int8_head.path, device="cpu") as model:
        assert model.generate("The quick brown fox", max_new_tokens=4, ignore_eos=True).new_tokens == 4


def test_lm_head_int4_is_the_default_build(tiny_phi3: Path) -> None:
    from phi3_dml.targets import plan_build

    assert plan_build("int4", {"lm_head": "int4"}, "cpu") == plan_build("int4", {}, "cpu")
    assert plan_build("int4", {"lm_head": "int8"}, "cpu").extra_options()["matmul_mixed_precision"] == (
        "last_matmul:int8"
    )
