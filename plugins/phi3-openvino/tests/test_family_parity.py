"""The conformance kit's family parity suite (issue 9) on both engines, fp16 IR run in f32.

fp16 is phi3-openvino's highest-fidelity artifact; ``INFERENCE_PRECISION_HINT=f32`` makes the CPU
plugin compute in f32 (its default on AVX512-BF16 CPUs is bf16), so greedy ids must equal the
transformers fp32 reference on every family layout. Artifacts go to the session's phi3 cache, keyed
by the checkpoint's content, so both engines share one export per variant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from _ov_common import F32

import phi3
from phi3.testing.parity import FamilyParitySuite, parity_prompt
from phi3.testing.reference import encode_prompt, reference_greedy_ids
from phi3.testing.upstream import upstream_bug
from phi3_openvino.genai_engine import no_prefix_cache
from phi3_openvino.rope_tables import rope_tables

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

N_NEW = 32


class TestGenAIFamilyParity(FamilyParitySuite):
    backend = "openvino"
    engine = "genai"
    device = "CPU"
    precision = "fp16"
    backend_options: ClassVar[dict[str, Any]] = F32


class TestOptimumFamilyParity(FamilyParitySuite):
    """Also the int8/int4 KL rows: the same IR as genai's, and optimum-intel exposes the logits."""

    backend = "openvino"
    engine = "optimum"
    device = "CPU"
    precision = "fp16"
    backend_options: ClassVar[dict[str, Any]] = F32
    kl_bounds: ClassVar[dict[str, float]] = {"int8": 0.01, "int4": 0.3}
    """Measured (mean nats/token, teacher-forced): int8 0.0011-0.0023, int4 0.053-0.124 (defaults:
    int8 asym per channel; int4 sym, ratio 0.6, group size auto)."""

    def teacher_forced_logprobs(self, model: phi3.Model, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
        import numpy as np
        import torch

        ids = torch.tensor([list(input_ids)])
        with torch.no_grad():
            logits = model.session.native.model(ids, attention_mask=torch.ones_like(ids)).logits[0].float()
        return np.asarray(torch.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)


# -- the workarounds, and the upstream bugs they work around ----------------------------------------
#
# Each upstream bug has a strict xfail that reproduces it without phi3's workaround: it turns red
# (XPASS) once the pinned library is fixed, and then the workaround can go.

LONG = "phi3-mini-128k"


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Phi-3-mini-128k (LongRoPE, switch at 64): same bytes as the suite's, same artifact."""
    from phi3.testing.tiny_model import make_tiny_phi3

    return make_tiny_phi3(tmp_path_factory.mktemp("family-ov") / LONG, variant=LONG)


@pytest.fixture(scope="module")
def long_fp16(long_model: Path) -> phi3.Artifact:
    return phi3.quantize(long_model, backend="openvino", precision="fp16")


def _prompt_ids(model_dir: Path, case: str) -> list[int]:
    return encode_prompt(model_dir, parity_prompt(model_dir, LONG, case))


def _rotary_constants(model_xml: Path) -> dict[str, Any]:
    import openvino as ov

    model = ov.Core().read_model(str(model_xml))
    return {
        op.get_friendly_name(): op
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and "rotary_emb" in op.get_friendly_name() and op.get_output_size() == 1
    }


def test_fp16_ir_keeps_the_rope_tables_in_f32_with_the_checkpoints_values(
    long_model: Path, long_fp16: phi3.Artifact
) -> None:
    import numpy as np

    tables = rope_tables(json.loads((long_model / "config.json").read_text()))
    found = {}
    for op in _rotary_constants(long_fp16.path / "openvino_model.xml").values():
        values = op.get_data().reshape(-1)
        for name, table in tables.items():
            if table.size == values.size and np.allclose(values, table, rtol=1e-3):
                found[name] = (op.get_output_element_type(0).get_type_name(), np.array_equal(values, table))
    assert found == {name: ("f32", True) for name in ("base ** (2i/dim)", "short_factor", "long_factor")}, found
    assert sorted(long_fp16.manifest["export"]["rope_tables_f32"]) == sorted(found)


def test_fp16_logprobs_do_not_drift_at_long_positions(long_model: Path, long_fp16: phi3.Artifact) -> None:
    """One forward over 2000 tokens (the tiny model's 2048 is its "128k"), teacher-forced, vs fp32.

    Measured: max |log-prob error| over the last 256 positions 0.016 with the tables in f32 (what
    fp16 weights cost), 0.59 with optimum-intel's fp16 tables (top-1 agreement 99.9 % vs 98.4 %).
    """
    import numpy as np
    import torch

    from phi3.testing.reference import reference_logprobs

    config = json.loads((long_model / "config.json").read_text())
    ids = [1, *np.random.default_rng(0).integers(5, config["vocab_size"] - 5, 1999).tolist()]
    expected = reference_logprobs(long_model, ids)
    load = {"backend": "openvino", "device": "CPU", "engine": "optimum", **F32}
    with phi3.load(long_fp16.path, **load) as model, torch.no_grad():
        logits = model.session.native.model(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).logits
    got = torch.log_softmax(logits[0].float(), dim=-1).numpy()
    error = float(np.abs(got - expected)[-256:].max())
    assert error < 0.05, f"max |log-prob error| {error:.4f} at positions 1744-1999"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="optimum-intel 2.2.0 compresses the whole IR to fp16 (OVConfig(dtype='fp16')), RoPE tables included",
)
def test_optimum_intel_fp16_export_keeps_rope_tables_in_f32_upstream(long_model: Path, tmp_path: Path) -> None:
    from phi3_openvino.export import _export_ir, quiet_tracing

    with quiet_tracing():
        _export_ir(long_model, tmp_path, "fp16", trust_remote_code=False)
    constants = _rotary_constants(tmp_path / "openvino_model.xml").values()
    types = {op.get_output_element_type(0).get_type_name() for op in constants}
    assert "f16" not in types, types


def test_genai_sequence_of_prompts_equals_fresh_pipelines(long_model: Path, long_fp16: phi3.Artifact) -> None:
    """Across the switch both ways, on one loaded model: prefix caching must not mix factor tables."""
    order = ["longrope_decode", "longrope_prompt", "short", "longrope_decode", "longrope_prompt"]
    prompts = {case: parity_prompt(long_model, LONG, case) for case in order}

    def load() -> phi3.Model:
        return phi3.load(long_model, backend="openvino", device="CPU", precision="fp16", engine="genai", **F32)

    fresh = {}
    for case in dict.fromkeys(order):
        with load() as model:
            fresh[case] = model.generate(prompts[case], max_new_tokens=N_NEW, ignore_eos=True).token_ids
    with load() as model:
        for case in order:
            assert model.generate(prompts[case], max_new_tokens=N_NEW, ignore_eos=True).token_ids == fresh[case], case


def _raw_genai(artifact: phi3.Artifact, ids: list[int], **pipeline_args: Any) -> list[int]:
    import openvino_genai

    pipe = openvino_genai.LLMPipeline(str(artifact.path), "CPU", INFERENCE_PRECISION_HINT="f32", **pipeline_args)
    return _raw_generate(pipe, ids)


def _raw_generate(pipe: Any, ids: list[int]) -> list[int]:
    import numpy as np
    import openvino as ov
    import openvino_genai

    config = pipe.get_generation_config()
    config.max_new_tokens = config.min_new_tokens = N_NEW
    config.ignore_eos, config.apply_chat_template, config.do_sample = True, False, False
    inputs = openvino_genai.TokenizedInputs(
        ov.Tensor(np.asarray([ids], np.int64)), ov.Tensor(np.ones((1, len(ids)), np.int64))
    )
    return [int(i) for i in pipe.generate(inputs, config).tokens[0]]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="openvino-genai 2026.4.1 prefix cache reuses KV blocks computed with the other LongRoPE factor table",
)
def test_genai_prefix_cache_keeps_longrope_factors_apart_upstream(long_model: Path, long_fp16: phi3.Artifact) -> None:
    import openvino_genai

    decode, prompt = _prompt_ids(long_model, "longrope_decode"), _prompt_ids(long_model, "longrope_prompt")
    fresh = _raw_genai(long_fp16, prompt, scheduler_config=no_prefix_cache())
    config = no_prefix_cache()
    config.enable_prefix_caching = True  # genai's default on the CPU
    pipe = openvino_genai.LLMPipeline(
        str(long_fp16.path), "CPU", INFERENCE_PRECISION_HINT="f32", scheduler_config=config
    )
    _raw_generate(pipe, decode)  # leaves short-factor blocks for the 57-token prefix in the cache
    assert _raw_generate(pipe, prompt) == fresh


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="openvino-genai 2026.4.1 keeps short-factor keys in its KV cache when decoding crosses the LongRoPE switch",
)
def test_genai_one_call_across_the_longrope_switch_matches_upstream(long_model: Path, long_fp16: phi3.Artifact) -> None:
    decode = _prompt_ids(long_model, "longrope_decode")
    expected = reference_greedy_ids(long_model, input_ids=decode, max_new_tokens=N_NEW)
    assert _raw_genai(long_fp16, decode, scheduler_config=no_prefix_cache()) == expected


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="optimum-intel 2.2.0 OVPhi3ForCausalLM reads cache_position, which transformers 5.x no longer passes",
)
def test_optimum_generates_past_the_longrope_switch_upstream(long_model: Path, long_fp16: phi3.Artifact) -> None:
    import torch
    from optimum.intel import OVModelForCausalLM

    model = OVModelForCausalLM.from_pretrained(
        str(long_fp16.path), device="CPU", ov_config=F32["ov_config"], local_files_only=False
    )
    ids = torch.tensor([_prompt_ids(long_model, "longrope_decode")])
    # cache_position[0] on None, in optimum's prepare_inputs_for_generation
    with upstream_bug(
        TypeError, match="'NoneType' object is not subscriptable", raised_in="prepare_inputs_for_generation"
    ):
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW, do_sample=False)


def test_optimum_engine_patches_only_longrope_models(long_fp16: phi3.Artifact, tiny_phi3: Path) -> None:
    with phi3.load(long_fp16.path, backend="openvino", device="CPU", engine="optimum", **F32) as model:
        assert model.session.native.longrope_patched
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="fp16", engine="optimum", **F32) as model:
        assert not model.session.native.longrope_patched


def test_batching_engine_is_right_on_longrope(long_model: Path, long_fp16: phi3.Artifact) -> None:
    """max_concurrent_generations > 1 (ContinuousBatchingPipeline): the same workarounds as LLMPipeline."""
    load = {"backend": "openvino", "device": "CPU", "precision": "fp16", "engine": "genai", **F32}
    with phi3.load(long_model, max_concurrent_generations=2, **load) as model:
        for case in ("longrope_decode", "longrope_prompt", "short", "longrope_decode"):
            prompt = parity_prompt(long_model, LONG, case)
            ids = encode_prompt(long_model, prompt)
            expected = reference_greedy_ids(long_model, input_ids=ids, max_new_tokens=N_NEW)
            got = model.generate(prompt, max_new_tokens=N_NEW, ignore_eos=True)
            assert list(got.token_ids) == expected, case
