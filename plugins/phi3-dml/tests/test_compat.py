"""Configs written for old runtimes (the DirectML user's 0.13.1) by the newest builder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import phi3
import pytest

from conftest import PROMPT, LoadDml
from phi3_dml import compat


def test_built_artifacts_are_down_levelled(load_dml: LoadDml) -> None:
    model = load_dml("int4")
    manifest = model.artifact.manifest
    tokenizer_config = json.loads((model.artifact.path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] in compat.KNOWN_TOKENIZER_CLASSES
    assert tokenizer_config["chat_template"].startswith("{% for message in messages %}")
    assert tokenizer_config["add_bos_token"] is True
    genai = json.loads((model.artifact.path / "genai_config.json").read_text())
    assert compat.downlevel_genai_config(genai) == ([], []), "every key is one 0.13.1 reads"
    assert manifest["runtime_min_version"] == compat.OLDEST_RUNTIME
    assert manifest["compat_unknown_keys"] == []
    assert manifest["context_length"] == 512
    assert manifest["model_files"] == ["model.onnx", "model.onnx.data"]
    assert manifest["builder_version"] == manifest["library_versions"]["onnxruntime-genai"]


@pytest.fixture(scope="module")
def windowed_phi3(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a sliding window, as Phi-3-mini has."""
    folder = tmp_path_factory.mktemp("windowed") / "tiny-phi3-window"
    shutil.copytree(tiny_phi3, folder)
    config = json.loads((folder / "config.json").read_text())
    config["sliding_window"] = 256
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def test_sliding_window_models_get_the_window_in_the_graph(windowed_phi3: Path) -> None:
    """Builder 0.18.0 alone builds full attention and writes a sliding_window section (the runtime then
    fails past the window); phi3-dml builds the window into the graph and writes no such section."""
    import onnx

    with phi3.load(windowed_phi3, backend="dml", device="cpu", precision="int4") as model:
        genai = json.loads((model.artifact.path / "genai_config.json").read_text())
        assert "sliding_window" not in genai["model"]["decoder"]
        assert model.artifact.manifest["compat_unknown_keys"] == []
        graph = onnx.load(str(model.artifact.path / "model.onnx"), load_external_data=False).graph
        windows = {
            onnx.helper.get_attribute_value(a)
            for node in graph.node
            if node.op_type == "GroupQueryAttention"
            for a in node.attribute
            if a.name == "local_window_size"
        }
        assert windows == {256}
        assert model.generate(PROMPT, max_new_tokens=5, ignore_eos=True).new_tokens == 5


def _genai(**decoder_extra: Any) -> dict[str, Any]:
    return {
        "model": {"type": "phi3", "context_length": 512, "decoder": {"filename": "model.onnx", **decoder_extra}},
        "search": {"max_length": 512},
    }


def test_nonzero_cache_slack_and_new_keys_are_reported_not_dropped() -> None:
    config = _genai(sliding_window={"window_size": 8, "cache_slack": 4}, state_groups=[1])
    changes, unknown = compat.downlevel_genai_config(config)
    assert changes == []
    assert unknown == ["model.decoder.sliding_window.cache_slack", "model.decoder.state_groups"]
    assert config["model"]["decoder"]["sliding_window"]["cache_slack"] == 4


def test_session_option_strings_are_free_form() -> None:
    config = _genai(session_options={"log_id": "x", "ep.cuda.fpa_intb_gemm": "1", "provider_options": []})
    assert compat.downlevel_genai_config(config) == ([], [])


def test_tokenizer_class_comes_from_the_checkpoint_then_from_tokenizer_json() -> None:
    built = {"tokenizer_class": "TokenizersBackend"}
    changes, problems = compat.downlevel_tokenizer_config(built, {"tokenizer_class": "GPT2Tokenizer"}, None, None)
    assert built["tokenizer_class"] == "GPT2Tokenizer" and changes and not problems
    sentencepiece = {"model": {"type": "BPE", "byte_fallback": True}, "decoder": {"type": "ByteFallback"}}
    byte_level = {"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}
    assert compat.infer_tokenizer_class(sentencepiece) == "LlamaTokenizer"
    assert compat.infer_tokenizer_class(byte_level) == "GPT2Tokenizer"
    assert compat.infer_tokenizer_class({"model": {"type": "WordPiece"}}) is None
    unknown = {"tokenizer_class": "TokenizersBackend"}
    _, problems = compat.downlevel_tokenizer_config(unknown, {}, {"model": {"type": "Unigram"}}, None)
    assert problems == ["tokenizer_config.json tokenizer_class='TokenizersBackend'"]


def test_an_artifact_for_a_newer_runtime_is_refused_with_the_fix() -> None:
    manifest = {"runtime_min_version": "0.18.0", "compat_unknown_keys": ["genai_config.json model.decoder.x"]}
    compat.check_runtime(manifest, "0.18.0", "abc")
    compat.check_runtime(manifest, "0.19.0rc1", "abc")
    with pytest.raises(phi3.ArtifactError, match=r"needs onnxruntime-genai >= 0.18.0 .*decoder.x.*0.13.1") as info:
        compat.check_runtime(manifest, "0.13.1", "abcdef0123456789")
    assert "phi3 cache rm abcdef012345" in str(info.value)
    assert compat.parse_version("0.14.0rc1") == (0, 14, 0)
    assert compat.parse_version("1.24.4+cpu") == (1, 24, 4)


def test_a_default_cache_slack_is_dropped() -> None:
    """Artifacts built before phi3-dml put the window in the graph still carry cache_slack=0."""
    config = _genai(sliding_window={"window_size": 8, "cache_slack": 0})
    changes, unknown = compat.downlevel_genai_config(config)
    assert unknown == [] and any("cache_slack" in c for c in changes)
    assert config["model"]["decoder"]["sliding_window"] == {"window_size": 8}


def test_tool_call_token_ids_are_dropped_for_old_runtimes() -> None:
    """Builder 0.18.0 writes Phi-4-mini's tool-call token ids, which 0.13.1 rejects; phi3 never uses them."""
    config = _genai()
    config["model"].update(bot_token_id=200025, eot_token_id=200026)
    changes, unknown = compat.downlevel_genai_config(config)
    assert unknown == [] and "bot_token_id" not in config["model"] and "eot_token_id" not in config["model"]
    assert len(changes) == 2
