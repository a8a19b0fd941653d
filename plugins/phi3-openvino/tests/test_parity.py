"""Numerics: fp16 and int8 reproduce the transformers fp32 reference token for token.

The CPU plugin runs in f32 here (``INFERENCE_PRECISION_HINT``); its bf16 default on these CPUs
would add its own rounding. Greedy ids are compared on ``PARITY_PROMPT``: the tiny model's random
weights give nearly tied top-2 logits at some steps of some prompts (``"The quick brown fox"`` has
a 0.0006 gap at step 16), and int8 weight rounding moves logits by ~0.007, so no correct int8 model
can be required to match there. fp16 (error ~0.0003) must match on both prompts. The logit-error
test bounds the error itself, so the parity tests cannot pass by luck of the prompt alone.
int4 legitimately differs from fp32; it must decode the requested number of tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _ov_common import F32, PROMPT

import phi3
from phi3.testing.reference import encode_prompt, reference_greedy_ids, reference_next_token_logits

N = 24  # the issue asks for at least 20
PARITY_PROMPT = "def main():"
MAX_LOGIT_ERROR = {"fp16": 1e-3, "int8": 2e-2}
"""Measured here: fp16 ~3e-4, int8 ~9e-3, against logits with a spread (std) of ~0.15."""


def _load(tiny: Path, precision: str, engine: str) -> phi3.Model:
    return phi3.load(tiny, backend="openvino", device="CPU", precision=precision, engine=engine, **F32)


@pytest.mark.parametrize("engine", ["genai", "optimum"])
@pytest.mark.parametrize(("precision", "prompt"), [("fp16", PROMPT), ("fp16", PARITY_PROMPT), ("int8", PARITY_PROMPT)])
def test_greedy_ids_equal_the_fp32_reference(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str, precision: str, prompt: str
) -> None:
    reference = reference_greedy_ids(tiny_phi3, prompt, max_new_tokens=N, ignore_eos=True)
    with _load(tiny_phi3, precision, engine) as model:
        result = model.generate(prompt, max_new_tokens=N, ignore_eos=True)
    assert list(result.token_ids) == reference
    assert result.prompt_tokens == len(encode_prompt(tiny_phi3, prompt))
    assert (result.engine, result.device, result.precision) == (engine, "CPU", precision)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_logit_error_is_bounded(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], precision: str) -> None:
    """Every next-token logit along a 24-token continuation, OpenVINO vs transformers fp32."""
    import torch

    ids = encode_prompt(tiny_phi3, PROMPT) + reference_greedy_ids(tiny_phi3, PROMPT, max_new_tokens=N)
    start = len(ids) - N
    expected = np.stack([reference_next_token_logits(tiny_phi3, ids[:k]) for k in range(start, len(ids))])
    with _load(tiny_phi3, precision, "optimum") as model:
        ov_model = model.session.native.model
        with torch.no_grad():
            logits = ov_model(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
    actual = logits[0, start - 1 : len(ids) - 1].numpy()
    error = float(np.abs(actual - expected).max())
    assert error < MAX_LOGIT_ERROR[precision], f"{precision}: max |logit error| {error:.5f}"
    assert error > 0 or precision == "fp16", "int8 that equals fp32 exactly means nothing was quantized"


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_int4_generates_the_requested_number_of_tokens(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str
) -> None:
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int4", engine=engine) as model:
        result = model.generate(PROMPT, max_new_tokens=N, ignore_eos=True)
    assert result.new_tokens == N
    assert result.finish_reason == "length"


def test_int4_artifact_holds_what_was_asked(artifacts: dict[str, phi3.Artifact]) -> None:
    """Defaults are the accurate recipe's (sym, group 64, ratio 0.6)."""
    import openvino as ov

    quant = artifacts["int4"].manifest["quantization"]
    assert quant == {
        "precision": "int4",
        "bits": 4,
        "sym": True,
        "group_size": 64,
        "ratio": 0.6,
        "group_size_requested": "auto",
        "recipe": "accurate",
    }
    model = ov.Core().read_model(artifacts["int4"].path / "openvino_model.xml")
    types = {str(op.get_element_type()) for op in model.get_ops() if op.get_type_name() == "Constant"}
    assert "<Type: 'int4_t'>" in types or "i4" in types, types


def test_seeded_sampling_repeats_and_unseeded_varies(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    unseeded_config = phi3.GenerationConfig(max_new_tokens=16, do_sample=True, temperature=1.0, ignore_eos=True)
    config = unseeded_config.replace(seed=7)
    with _load(tiny_phi3, "fp16", "genai") as model:
        seeded = {model.generate(PROMPT, config).token_ids for _ in range(2)}
        unseeded = {model.generate(PROMPT, unseeded_config).token_ids for _ in range(3)}
    assert len(seeded) == 1
    assert len(unseeded) > 1, "without a seed, sampling must not repeat a fixed seed"


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_min_p_really_filters(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str) -> None:
    """Both engines declare ``min_p`` (``model.sampling``) and apply it: at a high temperature sampling
    leaves the greedy path, and with min_p = 0.9999 only the top token (and exact ties) stays, so every
    seed decodes the greedy tokens. min_p=0.99 is not enough here: the random weights leave near-ties."""
    sampled = phi3.GenerationConfig(max_new_tokens=16, do_sample=True, temperature=3.0, ignore_eos=True)
    with _load(tiny_phi3, "fp16", engine) as model:
        assert "min_p" in model.sampling
        greedy = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True).token_ids
        for seed in (1, 2, 3):
            assert model.generate(PROMPT, sampled.replace(seed=seed, min_p=0.9999)).token_ids == greedy, seed
        free = {model.generate(PROMPT, sampled.replace(seed=seed)).token_ids for seed in (1, 2, 3)}
        assert greedy not in free, "at temperature 3 without min_p, sampling should leave the greedy path"
