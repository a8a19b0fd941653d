"""Bad inputs become phi3 errors that name the fix, before any slow work where possible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import phi3
import pytest
from phi3.cache import ArtifactCache
from phi3.types import Artifact, LoadRequest, ModelSource, QuantizeRequest

from conftest import PROMPT, LoadDml
from phi3_dml import builder, probe, providers, session
from phi3_dml.options import max_threads


def _quick_refusal(
    tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception], match: str, **kwargs: Any
) -> None:
    """Refused before any slow work: no child process (the builder runs in one) and nothing written."""
    started: list[Any] = []
    popen = subprocess.Popen

    def tripwire(args: Any, *rest: Any, **kwargs: Any) -> Any:
        started.append(args)
        return popen(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", tripwire)
    before = _built_files()
    with pytest.raises(error, match=match):
        phi3.quantize(tiny_phi3, backend="dml", **kwargs)
    assert started == [], "a refused combination started a child process (the builder runs in one)"
    assert _built_files() - before == set(), "a refused combination wrote model files"


def _built_files() -> set[Path]:
    """Files under the phi3 cache's artifacts and build folders (not its locks or hash records)."""
    home = Path(os.environ["PHI3_HOME"])
    return {path for folder in ("artifacts", "tmp") for path in (home / folder).rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("precision", "options", "match"),
    [
        ("bf16", {}, "bf16 cannot be built for execution_provider=cpu.*no bf16 kernels"),
        ("fp32", {"execution_provider": "dml"}, "fp32 cannot be built for execution_provider=dml.*invalid"),
        ("int8", {"execution_provider": "dml"}, "int8 cannot be built for execution_provider=dml"),
        (
            "int4",
            {"execution_provider": "tpu"},
            "execution_provider='tpu' is not allowed: it takes one of cpu, dml, cuda",
        ),
        ("int4", {"block_size": 48}, "block_size=48 is not allowed: it takes one of 16, 32, 64, 128, 256"),
        ("int4", {"accuracy_level": 7}, "accuracy_level=7 is not allowed: it takes one of 0, 1, 2, 3, 4"),
        ("fp16", {"block_size": 32}, "block_size applies to precision int4 or int8 only, not fp16"),
        ("int4", {"lm_head": "fp8"}, "lm_head='fp8' is not allowed: it takes one of int4, int8"),
        ("int8", {"lm_head": "int8"}, "lm_head applies to precision int4 only, not int8"),
    ],
)
def test_refused_builds_fail_fast(
    tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch, precision: str, options: dict[str, Any], match: str
) -> None:
    _quick_refusal(tiny_phi3, monkeypatch, phi3.ConfigError, match, precision=precision, **options)


def test_refusals_say_what_works(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.ConfigError) as info:
        phi3.quantize(tiny_phi3, backend="dml", precision="fp32", execution_provider="dml")
    assert "for dml use precision int4 or fp16" in str(info.value)
    assert "fp32 works with execution_provider=cpu or cuda" in str(info.value)


def test_unknown_precision_is_refused_by_phi3(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.PrecisionNotSupportedError, match="int3"):
        phi3.quantize(tiny_phi3, backend="dml", precision="int3")


@pytest.mark.parametrize("device", ["dml", "dml:1", "cuda"])
def test_gpu_devices_missing_here_are_device_errors(tiny_phi3: Path, device: str) -> None:
    with pytest.raises(phi3.DeviceNotFoundError, match=device):
        phi3.load(tiny_phi3, backend="dml", device=device)


def _request(artifact: Artifact, device: str, **options: Any) -> LoadRequest:
    return LoadRequest(
        artifact=artifact, engine="genai", device=device, options=options, cache_dir=ArtifactCache().compiled_dir("dml")
    )


def test_dml_requested_on_linux_says_why(load_dml: LoadDml) -> None:
    """phi3 itself refuses an unknown device first; the backend's own check explains DirectML."""
    dml_artifact = load_dml("int4", execution_provider="dml").artifact
    with pytest.raises(phi3.DeviceNotFoundError) as info:
        session.load(_request(dml_artifact, "dml"))
    message = str(info.value)
    assert "not built with DirectML" in message
    assert "Windows" in message and "DirectX 12" in message and "onnxruntime-genai-directml" in message
    assert "devices here: cpu" in message


def test_a_cpu_graph_is_refused_on_a_gpu_device(load_dml: LoadDml) -> None:
    cpu_artifact = load_dml("int4").artifact
    with pytest.raises(phi3.ConfigError, match="built for execution_provider=cpu; device dml:0 needs"):
        session.load(_request(cpu_artifact, "dml:0"))
    with pytest.raises(phi3.ConfigError, match="bf16"):
        providers.check_artifact_target(providers.Device("cpu"), "cuda", "bf16")


def test_bad_device_names_and_load_options(load_dml: LoadDml) -> None:
    artifact = load_dml("int4").artifact
    with pytest.raises(phi3.DeviceNotFoundError, match="cpu, dml, dml:N, cuda or cuda:N"):
        session.load(_request(artifact, "cpu:1"))
    with pytest.raises(phi3.ConfigError, match="provider_options apply to dml and cuda"):
        session.load(_request(artifact, "cpu", provider_options={"enable_graph_capture": "0"}))
    # values are checked by phi3 against the backend's option specs, before the backend is called
    with pytest.raises(phi3.ConfigError, match="intra_op_num_threads=0 is not allowed"):
        phi3.load(artifact.path, backend="dml", device="cpu", intra_op_num_threads=0)
    for too_many in (max_threads() + 1, 100_000):  # ONNX Runtime would start them all and hang
        with pytest.raises(phi3.ConfigError, match=f"<= {max_threads()}.*logical CPUs"):
            phi3.load(artifact.path, backend="dml", device="cpu", intra_op_num_threads=too_many)
    with pytest.raises(phi3.ConfigError, match=r"provider_options=.* is not allowed: it takes a mapping"):
        phi3.load(artifact.path, backend="dml", device="cpu", provider_options=["enable_graph_capture"])


@pytest.fixture
def spoiled(load_dml: LoadDml, tmp_path: Path) -> Path:
    """A private copy of a built artifact (an artifact folder phi3 can load directly)."""
    source = load_dml("int4").artifact.path
    target = tmp_path / "artifact"
    shutil.copytree(source, target)
    return target


def test_corrupt_genai_config_is_an_artifact_error(spoiled: Path) -> None:
    config = spoiled / "genai_config.json"
    size = config.stat().st_size
    config.write_text(("{" + "x" * size)[:size])  # same size: passes phi3's manifest size check
    with pytest.raises(phi3.ArtifactError, match=r"genai_config.json is corrupt") as info:
        phi3.load(spoiled, backend="dml", device="cpu")
    # a folder outside PHI3_HOME is rebuilt with -o, not removed from the cache (core's rebuild_hint)
    assert f"phi3 quantize MODEL -o {spoiled} --overwrite" in str(info.value)


def test_truncated_genai_config_is_an_artifact_error(spoiled: Path) -> None:
    config = spoiled / "genai_config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(phi3.ArtifactError, match=r"genai_config\.json"):
        phi3.load(spoiled, backend="dml", device="cpu")


def test_missing_weights_in_the_cache_are_an_artifact_error(load_dml: LoadDml, tiny_phi3: Path) -> None:
    artifact = load_dml("int8").artifact
    (artifact.path / "model.onnx.data").unlink()
    with pytest.raises(phi3.ArtifactError, match=r"missing model\.onnx\.data") as info:
        phi3.load(tiny_phi3, backend="dml", device="cpu", precision="int8")
    assert "phi3 cache rm" in str(info.value)
    ArtifactCache().remove(artifact.path)  # leave the session cache healthy for later tests


def test_missing_weights_not_listed_in_the_manifest_are_caught_by_the_backend(spoiled: Path) -> None:
    manifest_path = spoiled / "phi3-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].pop("model.onnx.data")
    manifest_path.write_text(json.dumps(manifest))
    (spoiled / "model.onnx.data").unlink()
    with pytest.raises(phi3.ArtifactError, match=r"missing model\.onnx\.data"):
        phi3.load(spoiled, backend="dml", device="cpu")


def test_a_graph_the_runtime_cannot_parse_is_an_artifact_error(spoiled: Path) -> None:
    manifest_path = spoiled / "phi3-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    onnx = spoiled / "model.onnx"
    onnx.write_bytes(b"\x00garbage" * (onnx.stat().st_size // 8) + b"\x00" * (onnx.stat().st_size % 8))
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(phi3.ArtifactError, match=r"onnxruntime-genai cannot read artifact file .*model\.onnx"):
        phi3.load(spoiled, backend="dml", device="cpu")


def test_prompt_longer_than_the_context(load_dml: LoadDml) -> None:
    model = load_dml("int4")
    with pytest.raises(phi3.PromptTooLongError, match="the model's context is 512 tokens") as info:
        model.generate("hello world " * 600, max_new_tokens=2)
    assert "shorten the prompt" in str(info.value)
    assert model.generate(PROMPT, max_new_tokens=2, ignore_eos=True).new_tokens == 2


def test_missing_builder_dependencies_name_the_extra(
    tiny_phi3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe, "BUILDER_MODULES", (*probe.BUILDER_MODULES, "no_such_module_for_phi3"))
    source = ModelSource(path=tiny_phi3, model_id=str(tiny_phi3), revision="test")
    request = QuantizeRequest(source=source, precision="int4", engine="genai", options={})
    with pytest.raises(phi3.BackendUnavailableError, match=r"no_such_module_for_phi3.*phi3-dml\[build\]"):
        builder.quantize(request, tmp_path, lambda *a, **k: None)
    assert list(tmp_path.iterdir()) == []


def test_a_builder_crash_is_one_clear_error(tiny_phi3: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_phi3, broken)
    # a checkpoint phi3's own checks accept (headers, shapes) but the builder cannot convert
    config = json.loads((broken / "config.json").read_text())
    config["hidden_act"] = "no_such_activation"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(phi3.BackendError, match=r"model builder failed: .*(Error|error)") as info:
        phi3.quantize(broken, backend="dml", precision="fp32")
    assert "\n" not in info.value.message
    assert "model builder output" in str(info.value.__cause__)
