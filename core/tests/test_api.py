"""The public API end to end on the reference backend (real transformers, tiny Phi-3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import phi3
from phi3 import plugins
from phi3.cache import MANIFEST_NAME


def test_auto_picks_an_available_backend_and_says_why(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, precision="fp32") as model:
        assert model.backend == "reference"
        assert model.device == "cpu"
        assert "auto: picked backend reference on cpu" in model.selection_reason


def test_generate_reports_counts_timing_and_what_ran(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        result = model.generate("The quick brown fox", max_new_tokens=6, ignore_eos=True)
    assert result.new_tokens == 6 == len(result.token_ids)
    assert result.prompt_tokens > 3
    assert result.finish_reason == "length"
    assert 0 < result.time_to_first_token_s <= result.total_s
    assert (result.backend, result.engine, result.device, result.precision) == (
        "reference",
        "transformers",
        "cpu",
        "fp32",
    )
    assert json.loads(json.dumps(result.as_dict()))["new_tokens"] == 6


def test_stream_yields_pieces_and_keeps_the_result(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        stream = model.stream("Hello", max_new_tokens=8, ignore_eos=True)
        with pytest.raises(RuntimeError, match="not finished"):
            _ = stream.result
        pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == stream.result.text


def test_stop_string_text_is_never_shown(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        full = model.generate("Hello", max_new_tokens=20, ignore_eos=True).text
        stop = full.strip()[4:6]
        stream = model.stream("Hello", max_new_tokens=20, ignore_eos=True, stop=[stop])
        shown = "".join(stream)
    assert shown == full[: full.index(stop)] == stream.result.text
    assert stream.result.finish_reason == "stop"


def test_closing_a_stream_early_stops_the_backend(tiny_phi3: Path) -> None:
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        stream = model.stream("Hello", max_new_tokens=200, ignore_eos=True)
        next(stream)
        stream.close()
        # the model is usable right after: the backend's generator was closed, not left running
        assert model.generate("Hello", max_new_tokens=2, ignore_eos=True).new_tokens == 2


def test_chat_keeps_roles_and_uses_the_template(tiny_phi3: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        prompt = model.apply_chat_template(messages)
        assert prompt.startswith("<|system|>") and prompt.endswith("<|assistant|>\n")
        assert model.chat(messages, max_new_tokens=3, ignore_eos=True).new_tokens == 3
        with pytest.raises(phi3.ConfigError, match="role"):
            model.chat([{"role": "robot", "content": "x"}])
        with pytest.raises(phi3.ConfigError):
            model.chat("just a string")  # type: ignore[arg-type]


def test_closed_model_refuses_work(tiny_phi3: Path) -> None:
    model = phi3.load(tiny_phi3, backend="reference", precision="fp32")
    model.close()
    with pytest.raises(phi3.ConfigError, match="closed"):
        model.generate("hi")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"backend": "nope"}, phi3.BackendNotFoundError, "nope"),
        ({"backend": "reference", "precision": "int3"}, phi3.PrecisionNotSupportedError, "fp32, bf16"),
        ({"backend": "reference", "precision": "fp32", "device": "NPU"}, phi3.DeviceNotFoundError, "cpu"),
        ({"backend": "reference", "precision": "fp32", "engine": "warp"}, phi3.ConfigError, "transformers"),
        ({"backend": "reference", "precision": "fp32", "colour": "red"}, phi3.ConfigError, "pause_after_write"),
    ],
)
def test_bad_choices_fail_before_any_work(
    tiny_phi3: Path, phi3_home: Path, kwargs: dict[str, str], error: type[Exception], fragment: str
) -> None:
    before = sorted(p.name for p in phi3_home.rglob("*"))
    with pytest.raises(error) as info:
        phi3.load(tiny_phi3, **kwargs)
    assert fragment in str(info.value)
    assert sorted(p.name for p in phi3_home.rglob("*")) == before


def test_auto_without_a_usable_backend_says_what_is_wrong(tiny_phi3: Path) -> None:
    with pytest.raises(phi3.BackendUnavailableError, match="int4"):
        phi3.load(tiny_phi3)  # the reference backend offers fp32/bf16 only


def test_no_backend_installed_says_how_to_install_one(tiny_phi3: Path) -> None:
    plugins.get_registry().unregister("reference")
    with pytest.raises(phi3.BackendUnavailableError) as info:
        phi3.load(tiny_phi3, precision="fp32")
    assert "pip install phi3-openvino" in str(info.value)


def test_model_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(phi3.ModelNotFoundError, match="no such model folder"):
        phi3.load(tmp_path / "missing", backend="reference", precision="fp32")
    with pytest.raises(phi3.ModelNotFoundError, match=r"config\.json"):
        phi3.load(tmp_path, backend="reference", precision="fp32")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(phi3.ModelNotFoundError, match="Phi-3 family"):
        phi3.load(tmp_path, backend="reference", precision="fp32")
    with pytest.raises(phi3.ModelNotFoundError, match="known aliases"):
        phi3.load("not a model", backend="reference", precision="fp32")


def test_hub_ids_offline_say_how_to_use_a_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(phi3.ModelNotFoundError) as info:
        phi3.load("phi3-mini-4k", backend="reference", precision="fp32")
    assert "HF_HUB_OFFLINE" in str(info.value) and "folder" in str(info.value)


def test_unreachable_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # closed port on loopback: refused at once
    with pytest.raises(phi3.ModelNotFoundError, match="cannot be reached"):
        phi3.load("microsoft/Phi-3-mini-4k-instruct", backend="reference", precision="fp32")


def test_quantize_to_a_named_folder_then_load_it(tiny_phi3: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    artifact = phi3.quantize(tiny_phi3, backend="reference", precision="bf16", output=out)
    assert artifact.path == out.resolve() and (out / MANIFEST_NAME).is_file()
    assert not list(tmp_path.glob(".artifact.phi3-tmp.*")), "the temp build folder was left behind"
    with phi3.load(out) as model:  # backend and precision come from the manifest
        assert (model.backend, model.precision) == ("reference", "bf16")
        assert model.generate("Hi", max_new_tokens=2, ignore_eos=True).new_tokens == 2
    with pytest.raises(phi3.Phi3Error, match="already holds a phi3 artifact"):
        phi3.quantize(tiny_phi3, backend="reference", precision="bf16", output=out)
    with pytest.raises(phi3.ConfigError, match="fp32"):
        phi3.load(out, precision="fp32")


def test_truncated_artifact_is_reported_not_loaded(tiny_phi3: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    phi3.quantize(tiny_phi3, backend="reference", precision="fp32", output=out)
    weights = next(out.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(phi3.ArtifactError, match="corrupt"):
        phi3.load(out)


def test_artifact_key_follows_the_source_content(tiny_phi3: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_phi3, copy)
    first = phi3.quantize(copy, backend="reference", precision="fp32")
    assert phi3.quantize(copy, backend="reference", precision="fp32").from_cache
    config = json.loads((copy / "config.json").read_text())
    config["rope_theta"] = config.get("rope_theta", 10000.0) * 2
    (copy / "config.json").write_text(json.dumps(config))
    changed = phi3.quantize(copy, backend="reference", precision="fp32")
    assert changed.key != first.key and not changed.from_cache
