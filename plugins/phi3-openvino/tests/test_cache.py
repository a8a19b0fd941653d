"""Artifacts come from phi3's cache on the second load, and so does the compiled model."""

from __future__ import annotations

from pathlib import Path

import pytest
from _ov_common import F32, PROMPT

import phi3
from phi3_openvino import export


def _blobs(home: Path) -> set[Path]:
    return set((home / "compiled" / "openvino").rglob("*.blob"))


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_second_load_is_served_from_the_cache(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], phi3_home: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    options = {"ov_config": {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1}}
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine=engine, **options) as first:
        first_text = first.generate(PROMPT, max_new_tokens=8, ignore_eos=True).text
    blobs = _blobs(phi3_home)
    assert blobs, "CACHE_DIR inside phi3's cache should hold the compiled model"

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second load re-exported the model")

    monkeypatch.setattr(export, "quantize", no_export)
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine=engine, **options) as again:
        assert again.artifact.from_cache
        assert again.artifact.path == artifacts["int8"].path
        assert again.generate(PROMPT, max_new_tokens=8, ignore_eos=True).text == first_text
    assert _blobs(phi3_home) == blobs, "the second load compiled again instead of reusing the blob"


def test_engines_share_one_artifact(artifacts: dict[str, phi3.Artifact], tiny_phi3: Path) -> None:
    for engine in ("genai", "optimum"):
        again = phi3.quantize(tiny_phi3, backend="openvino", precision="fp16", engine=engine)
        assert again.from_cache and again.path == artifacts["fp16"].path


def test_artifact_is_self_contained(artifacts: dict[str, phi3.Artifact]) -> None:
    """Tokenizer models sit next to the IR; the scratch export folder is gone; manifest has context."""
    for artifact in artifacts.values():
        names = {p.name for p in artifact.path.iterdir()}
        assert {
            "openvino_model.xml",
            "openvino_model.bin",
            "openvino_tokenizer.xml",
            "openvino_detokenizer.xml",
            "generation_config.json",
            "config.json",
        } <= names
        assert export.SCRATCH not in names
        assert artifact.context_length == 512
        assert artifact.manifest["library_versions"]["openvino"]
        assert artifact.manifest["library_versions"]["nncf"]


def test_default_and_user_compile_properties(genai_int8: phi3.Model, phi3_home: Path) -> None:
    applied = genai_int8.session.details["ov_config"]
    assert applied["PERFORMANCE_HINT"] == "LATENCY"
    assert applied["NUM_STREAMS"] == "1"
    assert Path(applied["CACHE_DIR"]).is_relative_to(phi3_home)
    assert applied["INFERENCE_PRECISION_HINT"] == "f32"


@pytest.mark.parametrize(("precision", "expected"), [("int4", "f32"), ("int8", "f32"), ("fp16", None)])
def test_cpu_compiles_compressed_artifacts_in_f32(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], precision: str, expected: str | None
) -> None:
    """int4/int8 on the CPU compile with INFERENCE_PRECISION_HINT=f32 unless the user says otherwise (in f32
    OpenVINO's compressed matmuls quantize activations on the fly; bf16 widens the weights: ~1.5x slower
    decode on an AVX512-BF16 CPU); fp16 keeps OpenVINO's own default. Read back from OpenVINO itself."""
    import openvino as ov

    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision=precision, engine="optimum") as model:
        compiled = model.session.native.model.request.get_compiled_model()
        applied = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        assert model.session.details["ov_config"].get("INFERENCE_PRECISION_HINT") == expected
    own_default = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    assert applied == ("<Type: 'float32'>" if expected == "f32" else own_default)
    with phi3.load(
        tiny_phi3, backend="openvino", device="CPU", precision=precision, ov_config={"INFERENCE_PRECISION_HINT": "bf16"}
    ) as model:
        assert model.session.details["ov_config"]["INFERENCE_PRECISION_HINT"] == "bf16"


def test_user_ov_config_reaches_the_compiled_model(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    """Read back from OpenVINO itself (optimum exposes the compiled model), not from our own dict."""
    options = {"ov_config": {**F32["ov_config"], "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}}
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine="optimum", **options) as model:
        compiled = model.session.native.model.request.get_compiled_model()
        assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
        assert int(compiled.get_property("NUM_STREAMS")) == 2
        assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
