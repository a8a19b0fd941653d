"""Strict xfails that turn red when onnxruntime-genai's model builder fixes what phi3-dml works around.

Each builds a tiny family checkpoint with the builder directly (as a user of the builder would,
without phi3's workarounds) and checks the bug is still there. When one of these starts passing,
drop the matching workaround in :mod:`phi3_dml.builder` and its refusal in the README.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from phi3.testing.tiny_model import make_tiny_phi3
from phi3.testing.upstream import upstream_bug
from phi3.testing.variants import VARIANTS

BUILDER = "onnxruntime-genai 0.18.0"


def _raw_build(source: Path, out: Path, precision: str, provider: str, **extra: str) -> Path:
    """The builder's own artifact for ``source``: no staging, no phi3 options."""
    scratch = out.parent / f"{out.name}-scratch"
    scratch.mkdir(parents=True)
    spec = {
        "source": str(source),
        "output": str(out),
        "precision": precision,
        "execution_provider": provider,
        "cache_dir": str(scratch / "cache"),
        "extra_options": extra,
    }
    (scratch / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "phi3_dml._build_worker", str(scratch / "spec.json")],
        cwd=scratch,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"},
        check=False,
    )
    if done.returncode != 0:  # not AssertionError: a failed build must not pass for the bug an xfail pins
        raise RuntimeError(f"the builder failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return out


def _attention_windows(folder: Path) -> list[Any]:
    """(op type, local_window_size or None) of every attention node in the artifact's graph."""
    import onnx

    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    found = []
    for node in graph.node:
        if node.op_type.endswith("Attention"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            found.append((node.op_type, attrs.get("local_window_size")))
    return found


@pytest.fixture(scope="module")
def medium_4k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phi-3-medium-4k's layout: GQA 4:1, head_dim 128, sliding window 63 of 128."""
    return make_tiny_phi3(tmp_path_factory.mktemp("raw") / "phi3-medium-4k", variant="phi3-medium-4k")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=f"{BUILDER} builder: Phi3Config has no layer_types, so every Phi-3 layer is built with full "
    "attention (local_window_size -1) while genai_config.json still gets a sliding_window section; "
    "phi3_dml.builder._staged_source works around it",
)
def test_builder_still_ignores_the_phi3_window(medium_4k: Path, tmp_path: Path) -> None:
    window = VARIANTS["phi3-medium-4k"].sliding_window
    built = _raw_build(medium_4k, tmp_path / "fp32-cpu", "fp32", "cpu")
    assert {size for _, size in _attention_windows(built)} == {window}


@pytest.fixture(scope="module")
def fp16_cpu_graph(medium_4k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built as phi3 would: layer_types added (the window workaround), windowed_kv_cache=false."""
    staged = tmp_path_factory.mktemp("staged") / "phi3-medium-4k"
    shutil.copytree(medium_4k, staged)
    config = json.loads((staged / "config.json").read_text(encoding="utf-8"))
    config["layer_types"] = ["sliding_attention"] * config["num_hidden_layers"]
    (staged / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return _raw_build(staged, staged.parent / "fp16-cpu", "fp16", "cpu", windowed_kv_cache="false")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=f"{BUILDER} builder: the fp16 cpu graph uses MultiHeadAttention with Tile-repeated K/V, which "
    "crashes at the first decode step on GQA models; refused by phi3_dml.builder.check_fp16_cpu_layout",
)
def test_builder_fp16_cpu_graph_still_crashes_on_gqa(fp16_cpu_graph: Path) -> None:
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(fp16_cpu_graph))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([1, 20, 30, 40], dtype=np.int32))
    with upstream_bug(RuntimeError, match=r"repeat_kv.*Shape mismatch"):
        for _ in range(4):
            generator.generate_next_token()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=f"{BUILDER} builder: the fp16 cpu graph's MultiHeadAttention has a plain causal mask, so a "
    "sliding window is silently ignored; refused by phi3_dml.builder.check_fp16_cpu_layout",
)
def test_builder_fp16_cpu_graph_still_ignores_the_window(fp16_cpu_graph: Path) -> None:
    window = VARIANTS["phi3-medium-4k"].sliding_window
    assert {size for _, size in _attention_windows(fp16_cpu_graph)} == {window}


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="onnxruntime 1.31.1 CPU GroupQueryAttention: a fused rotary cos/sin cache must be a multiple "
    "of 8 wide, so a cpu graph of a model rotating 24 dims fails at the first generate; refused by "
    "phi3_dml.builder.check_fused_rotary",
)
def test_ort_fused_rotary_still_needs_a_multiple_of_8(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime_genai as og

    source = make_tiny_phi3(tmp_path / "phi4-mini", variant="phi4-mini")  # 0.75 x 32 = 24 rotary dims
    model = og.Model(str(_raw_build(source, tmp_path / "fp32-cpu", "fp32", "cpu")))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16, do_sample=False)
    generator = og.Generator(model, params)
    with upstream_bug(RuntimeError, match="cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8"):
        generator.append_tokens(np.asarray([20, 30, 40], dtype=np.int32))  # the prompt's forward runs here
        generator.generate_next_token()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="onnxruntime-genai 0.18.0 LongRoPE graphs choose the cos/sin table by total length, so the KV "
    "cache keeps short-factor keys once generation crosses original_max_position_embeddings; "
    "phi3_dml.generate recomputes the sequence at the switch",
)
def test_longrope_crossing_still_needs_a_recompute(tmp_path: Path) -> None:
    import phi3
    from phi3.testing.parity import parity_prompt
    from phi3.testing.reference import encode_prompt, reference_greedy_ids

    source = make_tiny_phi3(tmp_path / "phi3-mini-128k", variant="phi3-mini-128k")
    prompt = parity_prompt(source, "phi3-mini-128k", "longrope_decode")
    expected = reference_greedy_ids(source, input_ids=encode_prompt(source, prompt), max_new_tokens=32)
    with phi3.load(source, backend="dml", device="cpu", precision="fp32") as model:
        if model.session.native.longrope_switch != VARIANTS["phi3-mini-128k"].original_max_position_embeddings:
            pytest.fail(
                f"phi3-dml's switch is {model.session.native.longrope_switch}: the setup is wrong, not upstream"
            )
        model.session.native.longrope_switch = None  # the runtime alone
        assert list(model.generate(prompt, max_new_tokens=32, ignore_eos=True).token_ids) == expected
