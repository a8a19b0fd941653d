"""The genai engine: the NPU export recipe, the NPU's prompt limit, and what is sent to which device."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _npu_common import F32, GENAI, PARITY_PROMPT

import phi3
from phi3.testing.reference import reference_greedy_ids
from phi3_npu import genai_engine
from phi3_npu.options import GenAISettings


def _weight_types(artifact: phi3.Artifact) -> tuple[Counter[str], list[list[int]]]:
    """Element types of the IR's constants, and the shapes of its int4 ones."""
    import openvino as ov

    model = ov.Core().read_model(str(artifact.path / "openvino_model.xml"))
    types: Counter[str] = Counter()
    int4_shapes = []
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            element = op.get_output_element_type(0).get_type_name()
            types[element] += 1
            if element in ("i4", "u4"):
                int4_shapes.append(list(op.get_output_shape(0)))
    return types, int4_shapes


def test_int4_npu_recipe_is_symmetric_all_int4_per_channel(tiny_phi3: Path) -> None:
    """hidden 64: group 128 cannot apply, so the recipe's other layout: per output channel."""
    artifact = phi3.quantize(tiny_phi3, backend="npu", engine="genai", precision="int4")
    types, shapes = _weight_types(artifact)
    assert types["u4"] == 0, "asymmetric int4 weights (zero points) are not the NPU recipe"
    assert types["i4"] == 8, f"ratio 1.0: all 8 decoder matmuls in int4, got {dict(types)}"
    assert all(len(shape) == 2 for shape in shapes), f"per-channel weights are 2-D, got {shapes}"
    assert artifact.manifest["npu_recipe"] == {"precision": "int4", "group_size": -1, "ratio": 1.0, "sym": True}
    assert artifact.artifact_format == "openvino-ir-npu"


def test_int4_npu_recipe_uses_group_size_128_where_it_divides(tiny_phi3_128: Path) -> None:
    artifact = phi3.quantize(tiny_phi3_128, backend="npu", engine="genai", precision="int4")
    types, shapes = _weight_types(artifact)
    assert types["u4"] == 0 and types["i4"] == 8
    assert all(len(shape) == 3 and shape[-1] == 128 for shape in shapes), f"groups of 128, got {shapes}"
    assert artifact.manifest["npu_recipe"]["group_size"] == 128
    with phi3.load(artifact.path, **GENAI) as model:  # and the artifact runs
        assert model.generate("Hello", max_new_tokens=5, ignore_eos=True).new_tokens == 5


def test_int8_npu_recipe_is_symmetric(tiny_phi3: Path) -> None:
    artifact = phi3.quantize(tiny_phi3, backend="npu", engine="genai", precision="int8")
    types, _ = _weight_types(artifact)
    assert types["i8"] >= 8 and types["u8"] == 0, dict(types)


def test_fp16_artifact_on_cpu_matches_the_fp32_reference(tiny_phi3: Path) -> None:
    reference = reference_greedy_ids(tiny_phi3, PARITY_PROMPT, max_new_tokens=20, ignore_eos=True)
    with phi3.load(tiny_phi3, precision="fp16", **GENAI, **F32) as model:
        result = model.generate(PARITY_PROMPT, max_new_tokens=20, ignore_eos=True)
    assert list(result.token_ids) == reference
    assert result.device == "CPU"


@pytest.fixture(scope="module")
def limited(tiny_phi3: Path) -> Any:
    """MAX_PROMPT_LEN 8, MIN_RESPONSE_LEN 4: a KV cache of 12 tokens, as the NPU would compile."""
    with phi3.load(tiny_phi3, precision="int8", max_prompt_len=8, min_response_len=4, **GENAI) as model:
        yield model


def _prompt_of(model: phi3.Model, tokens: int) -> str:
    """A prompt of exactly ``tokens`` tokens (BOS included): "the" is one token in the tiny vocabulary."""
    text = " ".join(["the"] * (tokens - 1))
    assert int(model.session.native.count_tokens(text).input_ids.get_shape()[-1]) == tokens
    return text


def test_max_prompt_len_guard_fires_before_anything_runs(limited: phi3.Model) -> None:
    too_long = _prompt_of(limited, 9)
    with pytest.raises(phi3.PromptTooLongError, match=r"9 tokens.*MAX_PROMPT_LEN=8") as info:
        limited.session.native.generate(too_long, phi3.GenerationConfig(max_new_tokens=2))  # the call, not the stream
    assert "max_prompt_len" in str(info.value)
    with pytest.raises(phi3.PromptTooLongError):
        limited.generate(too_long, max_new_tokens=2)


def test_a_prompt_at_the_limit_runs_and_the_answer_fits_the_kv_cache(limited: phi3.Model) -> None:
    result = limited.generate(_prompt_of(limited, 8), max_new_tokens=50, ignore_eos=True)
    assert result.prompt_tokens == 8
    assert result.new_tokens == 4  # MAX_PROMPT_LEN + MIN_RESPONSE_LEN - prompt: where the NPU stops
    assert result.finish_reason == "length"
    assert limited.session.details["npu_limits"]["MAX_PROMPT_LEN"] == 8


def test_the_cpu_override_gets_no_npu_properties(limited: phi3.Model, phi3_home: Path) -> None:
    """The CPU plugin refuses MAX_PROMPT_LEN & co.; the limits are applied by phi3-npu instead."""
    sent = limited.session.details["ov_config"]
    assert "MAX_PROMPT_LEN" not in sent and "MIN_RESPONSE_LEN" not in sent
    assert sent["CACHE_DIR"] == str(phi3_home / "compiled" / "npu" / "genai")


def test_the_npu_gets_its_properties_and_cache_dir(
    tiny_phi3: Path, phi3_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What LLMPipeline receives on device NPU (no NPU here: the pipeline is a stand-in)."""
    import openvino_genai

    seen: dict[str, Any] = {}

    class Pipeline:
        def __init__(self, path: str, *tokenizer_and_device: Any, **properties: Any) -> None:
            # (path, device) or, with phi3-openvino's grammar tokenizer, (path, tokenizer, device)
            seen.update(path=path, device=tokenizer_and_device[-1], properties=properties)

        def get_tokenizer(self) -> None:
            return None

    monkeypatch.setattr(openvino_genai, "LLMPipeline", Pipeline)
    monkeypatch.setattr(genai_engine, "resolve_genai_device", lambda device: "NPU")
    artifact = phi3.quantize(tiny_phi3, backend="npu", engine="genai", precision="int4")
    settings = GenAISettings(max_prompt_len=2048, min_response_len=256, hints={"GENERATE_HINT": "BEST_PERF"})
    engine = genai_engine.GenAIEngine(artifact, "NPU", settings, phi3_home / "compiled" / "npu")
    assert seen["device"] == "NPU" and engine.device == "NPU"
    assert engine.structured_output == (), "no grammar is claimed on a real NPU (not verified there)"
    assert seen["properties"] == {
        "CACHE_DIR": str(phi3_home / "compiled" / "npu" / "genai"),
        "MAX_PROMPT_LEN": 2048,
        "MIN_RESPONSE_LEN": 256,
        "GENERATE_HINT": "BEST_PERF",
    }


def test_npu_options_are_load_options_on_the_cli(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3(
        "generate", str(tiny_phi3), "a b c d e f g h i j k l m n o p", "--raw", "-b", "npu", "--device", "CPU",
        "-p", "int8", "-O", "max_prompt_len=4", "-O", "prefill_hint=STATIC",
    )  # fmt: skip
    assert done.returncode == 1
    assert "MAX_PROMPT_LEN=4" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
