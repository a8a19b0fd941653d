"""Every user mistake and every damaged file ends as a phi3 error, never an OpenVINO traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _ov_common import F32, PROMPT

import phi3
from phi3.types import LoadRequest
from phi3_openvino import plugin

ENGINES = ["genai", "optimum"]


@pytest.mark.parametrize("device", ["NO-SUCH-DEVICE", "GPU", "NPU", "GPU.1"])
def test_absent_device_lists_the_present_ones(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], device: str
) -> None:
    """CI has only a CPU: GPU/NPU plugins exist but their drivers do not."""
    with pytest.raises(phi3.DeviceNotFoundError) as info:
        phi3.load(tiny_phi3, backend="openvino", device=device, precision="int8")
    assert device in str(info.value)
    assert "CPU" in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_plugin_itself_refuses_an_absent_device(
    artifacts: dict[str, phi3.Artifact], phi3_home: Path, engine: str
) -> None:
    """Even when the cheap probe listed a device (a GPU node without a driver), phi3_load checks."""
    request = LoadRequest(
        artifact=artifacts["int8"],
        engine=engine,
        device="GPU",
        options={},
        cache_dir=phi3_home / "compiled" / "openvino",
    )
    with pytest.raises(phi3.DeviceNotFoundError, match="devices present: CPU"):
        plugin.phi3_load(request=request)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("device", ["cpu", "AUTO"])
def test_device_names_resolve_to_what_really_runs(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str, device: str
) -> None:
    with phi3.load(tiny_phi3, backend="openvino", device=device, precision="int8", engine=engine) as model:
        assert model.device == "CPU"
        assert model.generate(PROMPT, max_new_tokens=2, ignore_eos=True).device == "CPU"


@pytest.mark.parametrize(("device", "runs_on"), [("AUTO:GPU,CPU", "CPU"), ("HETERO:CPU", "HETERO:CPU")])
def test_composite_devices_through_phi3(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], device: str, runs_on: str
) -> None:
    """phi3-core hands names it does not list to phi3_resolve_device; the load reports the real device."""
    with phi3.load(tiny_phi3, backend="openvino", device=device, precision="int8", engine="genai") as model:
        assert model.device == runs_on
    with pytest.raises(phi3.DeviceNotFoundError, match="GPU"):
        phi3.load(tiny_phi3, backend="openvino", device="HETERO:GPU,CPU", precision="int8")


def test_device_lists_resolve_like_openvino() -> None:
    """AUTO:/HETERO: lists resolved by the plugin's own resolver."""
    from phi3_openvino import devices

    assert devices.resolve("AUTO:GPU,CPU") == "CPU"
    assert devices.resolve("HETERO:cpu") == "HETERO:CPU"
    with pytest.raises(phi3.DeviceNotFoundError, match="GPU"):
        devices.resolve("HETERO:GPU,CPU")
    with pytest.raises(phi3.DeviceNotFoundError, match="devices present: CPU"):
        devices.resolve("AUTO:NPU")


def test_runtime_device_list() -> None:
    devices = {d.name: d for d in plugin.phi3_devices()}
    assert devices["CPU"].kind == "cpu" and devices["CPU"].description  # FULL_DEVICE_NAME
    assert devices["AUTO"].kind == "cpu"


def test_group_size_that_does_not_divide_the_hidden_size(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.ConfigError) as info:
        phi3.quantize(tiny_phi3, backend="openvino", precision="int4", group_size=128)
    message = str(info.value)
    assert "128" in message and "hidden size 64" in message
    assert "16, 32, 64, -1" in message and "auto" in message


@pytest.mark.parametrize(
    ("precision", "options", "words"),
    [
        ("int4", {"group_size": 0}, "group_size"),
        ("int4", {"group_size": "big"}, "group_size"),
        ("int4", {"ratio": 1.5}, "ratio"),
        ("int4", {"sym": "maybe"}, "sym"),
        ("int8", {"group_size": 64}, "applies to precision int4 only, not int8"),
        ("fp16", {"sym": True}, "applies to precision int4 or int8 only, not fp16"),
    ],
)
def test_bad_artifact_options_are_config_errors(
    tiny_phi3: Path, precision: str, options: dict[str, object], words: str
) -> None:
    with pytest.raises(phi3.ConfigError, match=words):
        phi3.quantize(tiny_phi3, backend="openvino", precision=precision, **options)


def test_bad_ov_config_is_a_config_error(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact]) -> None:
    with pytest.raises(phi3.ConfigError, match="ov_config"):
        phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", ov_config=["LATENCY"])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("ov_config", "words"),
    [
        ({"NO_SUCH_PROPERTY": "1"}, "has no property 'NO_SUCH_PROPERTY'"),
        ({"INFERENCE_PRECISION_HINT": "bogus"}, "INFERENCE_PRECISION_HINT has a value"),
        ({"PERFORMANCE_HINT": "FAST"}, "PERFORMANCE_HINT has a value"),
        ({"NUM_STREAMS": -5}, "NUM_STREAMS has a value"),
    ],
)
def test_a_property_the_device_refuses_is_an_option_error_not_a_corrupt_artifact(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str, ov_config: dict[str, object], words: str
) -> None:
    """It once read "openvino_tokenizer.xml is corrupt": the diagnosis re-read the tokenizer IR
    without the openvino_tokenizers extension."""
    with pytest.raises(phi3.ConfigError) as info:
        phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine=engine, ov_config=ov_config)
    assert words in str(info.value) and "ov_config" in str(info.value)
    assert "\n" not in str(info.value) and "corrupt" not in str(info.value)


@pytest.fixture
def damaged(artifacts: dict[str, phi3.Artifact], tmp_path: Path) -> Path:
    """A private copy of the int8 artifact (phi3.load accepts an artifact folder) to break."""
    copy = tmp_path / "artifact"
    shutil.copytree(artifacts["int8"].path, copy)
    return copy


@pytest.mark.parametrize(
    ("engine", "name"),
    [
        ("genai", "openvino_model.xml"),
        ("optimum", "openvino_model.xml"),
        ("genai", "openvino_tokenizer.xml"),  # the optimum engine uses the transformers tokenizer instead
        ("genai", "openvino_detokenizer.xml"),
    ],
)
def test_corrupt_ir_file_is_an_artifact_error(damaged: Path, engine: str, name: str) -> None:
    """Same size (so phi3's manifest check passes), garbage bytes: OpenVINO's parser fails."""
    path = damaged / name
    path.write_bytes(b"\x00garbage" * (path.stat().st_size // 8) + b"!" * (path.stat().st_size % 8))
    with pytest.raises(phi3.ArtifactError) as info:
        phi3.load(damaged, backend="openvino", device="CPU", engine=engine)
    assert name in str(info.value) and "phi3 cache rm" in str(info.value)


def test_truncated_weights_are_an_artifact_error(damaged: Path) -> None:
    weights = damaged / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(phi3.ArtifactError, match=r"openvino_model\.bin"):
        phi3.load(damaged, backend="openvino", device="CPU")


def test_missing_tokenizer_model_is_an_artifact_error(damaged: Path) -> None:
    """A folder from an older export without tokenizer IR (manifest rewritten to match)."""
    import json

    manifest_path = damaged / "phi3-manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name in ("openvino_detokenizer.xml", "openvino_detokenizer.bin"):
        (damaged / name).unlink()
        manifest["files"].pop(name)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(phi3.ArtifactError, match="missing openvino_detokenizer"):
        phi3.load(damaged, backend="openvino", device="CPU")


@pytest.mark.parametrize("engine", ENGINES)
def test_prompt_longer_than_the_context(tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str) -> None:
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine=engine, **F32) as model:
        with pytest.raises(phi3.PromptTooLongError, match="context is 512 tokens"):
            model.generate("hello world " * 400, max_new_tokens=2)
        # a prompt that fits is capped to the context instead of running past it
        result = model.generate(PROMPT, max_new_tokens=600, ignore_eos=True)
        assert result.prompt_tokens + result.new_tokens == 512


ABANDONED_STREAM = """
import sys, phi3
model = phi3.load(sys.argv[1], backend="openvino", engine=sys.argv[2], precision="int8")
first = model.stream("Hello", max_new_tokens=20, ignore_eos=True)
next(iter(first))
for second in (lambda: next(iter(model.stream("World", max_new_tokens=5))), lambda: model.generate("x")):
    try:
        second()
    except phi3.ModelBusyError:
        print("busy")
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_left_open_at_exit_never_aborts_the_process(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str
) -> None:
    """Two interleaved streams, and generate() inside a running stream: the busy error is raised and the
    process exits normally (it aborted at exit with 'terminate called without an active exception')."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ABANDONED_STREAM, str(tiny_phi3), engine],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["busy", "busy"]
    assert "terminate called" not in done.stderr
