"""Fast checks of the pure-Python parts: option rules, config mapping, incremental decoding, probe."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import phi3
from phi3.generation_config import GenerationConfig
from phi3.integrations.transformers_generation import to_transformers
from phi3_openvino import options
from phi3_openvino.config_mapping import compile_properties
from phi3_openvino.options import ModelShape, resolve_quantization
from phi3_openvino.streaming import IncrementalDecoder, stream_chunks

TINY = ModelShape(hidden_size=64, intermediate_size=128, context_length=512)
MINI = ModelShape(hidden_size=3072, intermediate_size=8192, context_length=4096)


def test_int4_defaults_are_the_accurate_recipe_on_real_phi3_shapes() -> None:
    settings = resolve_quantization("int4", {}, MINI)
    assert (settings.bits, settings.sym, settings.group_size, settings.ratio) == (4, True, 64, 0.6)
    assert settings.recipe == "accurate" and settings.note == ""


def test_auto_group_size_falls_below_the_recipes_aim_on_narrow_models() -> None:
    narrow = ModelShape(hidden_size=96, intermediate_size=160, context_length=512)  # gcd 32
    settings = resolve_quantization("int4", {}, narrow)
    assert settings.group_size == 32
    assert "group_size auto: 64 does not divide" in settings.note


def test_named_recipes_and_explicit_overrides() -> None:
    guide = resolve_quantization("int4", {"recipe": "guide"}, MINI)
    assert (guide.group_size, guide.ratio, guide.sym, guide.recipe) == (128, 0.6, True, "guide")
    accurate = resolve_quantization("int4", {}, MINI)
    assert (accurate.group_size, accurate.sym, accurate.recipe) == (64, True, "accurate")  # the default
    all_int4 = resolve_quantization("int4", {"recipe": "all-int4"}, MINI)
    assert (all_int4.ratio, all_int4.manifest()["recipe"]) == (1.0, "all-int4")
    assert resolve_quantization("int4", {"recipe": "all-int4", "ratio": 0.8}, MINI).ratio == 0.8
    fast = resolve_quantization("int4", {"recipe": "fast"}, MINI)
    assert (fast.group_size, fast.ratio, fast.sym, fast.recipe) == (64, 1.0, True, "fast")
    expected = "recipe='fastest' is not allowed: it takes one of accurate, guide, fast, all-int4"
    with pytest.raises(phi3.ConfigError, match=expected):
        resolve_quantization("int4", {"recipe": "fastest"}, MINI)


def _validate(options: dict[str, object], precision: str | None = None) -> dict[str, object]:
    """What phi3-core does with the user's options before any hook runs (the backend's declared specs)."""
    from phi3.options import validate_options
    from phi3_openvino import plugin

    return validate_options(plugin.phi3_backend_info(), options, None, precision)


@pytest.mark.parametrize(
    ("options", "precision", "expected"),
    [
        ({"group_size": "AUTO"}, "int4", {"group_size": "auto"}),
        ({"group_size": "-1", "ratio": "0.8", "sym": "asym"}, "int4", {"group_size": -1, "ratio": 0.8, "sym": False}),
        ({"recipe": "All-Int4"}, "int4", {"recipe": "all-int4"}),
        (
            {"ov_config": '{"NUM_STREAMS": 2}', "max_concurrent_generations": "4"},
            None,
            {"ov_config": {"NUM_STREAMS": 2}, "max_concurrent_generations": 4},
        ),
        ({"context_length": "MAX"}, None, {"context_length": "max"}),
    ],
)
def test_options_are_declared_specs_that_phi3_core_coerces(
    options: dict[str, object], precision: str | None, expected: dict[str, object]
) -> None:
    assert _validate(options, precision) == expected


@pytest.mark.parametrize(
    ("options", "precision", "words"),
    [
        ({"group_size": 0}, "int4", "group_size=0 is not allowed: it takes a whole number >= 1, or auto or -1"),
        ({"ratio": 0}, "int4", "ratio=0 is not allowed: it takes a number > 0 and <= 1"),
        ({"sym": "maybe"}, "int8", "sym='maybe' is not allowed: it takes true or false"),
        ({"recipe": "guide"}, "int8", "recipe applies to precision int4 only, not int8"),
        ({"sym": True}, "fp16", "sym applies to precision int4 or int8 only, not fp16"),
        ({"max_concurrent_generations": 257}, None, "it takes a whole number >= 1 and <= 256"),
        ({"ov_config": {"A": [1]}}, None, "ov_config=.* is not allowed: it takes a mapping"),
        ({"context_length": 1}, None, "context_length=1 is not allowed: it takes a whole number >= 2, or max"),
        ({"num_threads": 4}, None, "does not accept option"),
    ],
)
def test_bad_options_are_refused_by_phi3_core_in_one_line(
    options: dict[str, object], precision: str | None, words: str
) -> None:
    with pytest.raises(phi3.ConfigError, match=words) as caught:
        _validate(options, precision)
    assert "\n" not in str(caught.value) and caught.value.hint


def test_the_default_recipe_keys_the_artifact_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from phi3_openvino import plugin

    assert plugin.phi3_backend_info().library_versions["phi3-openvino-int4-recipe"] == "accurate"
    monkeypatch.setattr(plugin, "DEFAULT_INT4_RECIPE", "all-int4")
    assert plugin.phi3_backend_info().library_versions["phi3-openvino-int4-recipe"] == "all-int4"


def test_auto_group_size_on_a_tiny_model_says_what_it_picked() -> None:
    settings = resolve_quantization("int4", {"recipe": "guide"}, TINY)
    assert settings.group_size == 64
    assert "128 does not divide" in settings.note and "64" in settings.note


def test_group_size_error_names_working_sizes_for_both_widths() -> None:
    shape = ModelShape(hidden_size=3072, intermediate_size=8256, context_length=None)  # 8256 = 64 * 129
    with pytest.raises(phi3.ConfigError) as info:
        resolve_quantization("int4", {"group_size": 128}, shape)
    assert "hidden size 3072 and intermediate size 8256" in str(info.value)
    assert "16, 32, 64, -1" in str(info.value) and "128" not in str(info.value).split("work")[1]


@pytest.mark.parametrize(("given", "expected"), [(-1, -1), (32, 32), ("auto", 64), (64, 64)])
def test_group_size_spellings(given: object, expected: int) -> None:
    assert resolve_quantization("int4", {"group_size": given}, TINY).group_size == expected


def test_int8_and_fp16_settings() -> None:
    assert resolve_quantization("int8", {}, TINY).sym is False
    assert resolve_quantization("int8", {"sym": True}, TINY).sym is True
    assert resolve_quantization("fp16", {}, TINY).bits is None
    with pytest.raises(phi3.ConfigError, match="cannot build precision"):
        resolve_quantization("int2", {}, TINY)


def test_ov_config_from_cli_json_string() -> None:
    assert options.resolve_ov_config({"ov_config": '{"NUM_STREAMS": 2}'}) == {"NUM_STREAMS": 2}
    assert options.resolve_ov_config({}) == {}
    with pytest.raises(phi3.ConfigError):
        options.resolve_ov_config({"ov_config": {"A": [1]}})


def test_compile_properties_user_wins(tmp_path: Path) -> None:
    props = compile_properties({"NUM_STREAMS": "2", "CACHE_DIR": ""}, tmp_path)
    assert props == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "2", "CACHE_DIR": ""}
    assert compile_properties({}, tmp_path)["CACHE_DIR"] == str(tmp_path)


def test_transformers_mapping_greedy_sampling_and_ignore_eos() -> None:
    greedy = to_transformers(GenerationConfig(), 10, [2, 7])
    assert greedy["do_sample"] is False and greedy["top_k"] is None and "suppress_tokens" not in greedy
    sampled = to_transformers(GenerationConfig(do_sample=True, top_k=0, temperature=0.5, ignore_eos=True), 10, [2, 7])
    assert sampled["top_k"] == 0 and sampled["temperature"] == 0.5
    assert sampled["suppress_tokens"] == [2, 7] and sampled["min_new_tokens"] == 10


def _decode(ids: list[int]) -> str:
    """A toy SentencePiece-like decoder: drops the leading space, 9 is half of a 2-token char."""
    pieces = {1: " hello", 2: " world", 3: "!", 9: "\xc3", 10: "\xa9"}
    raw = "".join(pieces[i] for i in ids).encode("latin-1")
    return raw.decode("utf-8", errors="replace").removeprefix(" ")


def test_incremental_decoder_keeps_spaces_and_holds_partial_characters() -> None:
    decoder = IncrementalDecoder(_decode)
    pieces = [decoder.push([i]) for i in (1, 2, 9, 10, 3)]
    assert pieces == ["hello", " world", "", "é", "!"]
    assert "".join(pieces) == _decode([1, 2, 9, 10, 3])


def test_incremental_decoder_flushes_an_unfinished_character() -> None:
    decoder = IncrementalDecoder(_decode)
    assert decoder.push([1]) == "hello"
    assert decoder.push([9]) == ""
    assert decoder.flush() == "\ufffd"


def test_stream_stops_the_worker_when_closed() -> None:
    produced: list[int] = []

    def run(push: object) -> None:
        for i in range(1000):
            time.sleep(0.002)  # a token every 2 ms, like a (fast) model
            produced.append(i)
            if push([1]):  # type: ignore[operator]
                return

    busy = threading.Lock()
    stream = stream_chunks(
        run, lambda ids: "x" * len(ids), prompt_tokens=3, max_new_tokens=1000, busy=busy, translate=lambda e: e
    )
    first = next(stream)
    assert first.prompt_tokens == 3 and first.token_ids == (1,)
    stream.close()
    assert len(produced) < 1000 and not busy.locked()


def test_stream_hands_worker_errors_over_as_phi3_errors() -> None:
    def run(push: object) -> None:
        raise RuntimeError("Exception from src/core.cpp:1:\nboom")

    stream = stream_chunks(
        run,
        str,
        prompt_tokens=1,
        max_new_tokens=4,
        busy=threading.Lock(),
        translate=lambda e: phi3.BackendError(f"failed: {e}"),
    )
    with pytest.raises(phi3.BackendError, match="boom"):
        list(stream)


def test_probe_is_cheap_and_imports_no_vendor_module() -> None:
    code = (
        "import sys, phi3\n"
        "info = [b for b in phi3.backends() if b.name == 'openvino'][0].info\n"
        "print(info.status.value, ','.join(d.name for d in info.devices))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('openvino', 'openvino_genai', 'optimum', "
        "'torch', 'transformers', 'nncf', 'tokenizers', 'numpy')]\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    status, imported = done.stdout.splitlines()
    assert status == "available CPU"
    assert imported == "[]"


def test_probe_lists_an_intel_gpu_only_with_its_opencl_runtime(tmp_path: Path) -> None:
    from phi3_openvino.plugin import _probe_devices

    node = tmp_path / "sys" / "class" / "drm" / "renderD128" / "device"
    node.mkdir(parents=True)
    (node / "vendor").write_text("0x8086\n")
    (tmp_path / "dev" / "dri").mkdir(parents=True)
    (tmp_path / "dev" / "dri" / "renderD128").touch()
    devices, note = _probe_devices(tmp_path)
    assert [d.name for d in devices] == ["CPU"] and "OpenCL" in note
    (tmp_path / "etc" / "OpenCL" / "vendors").mkdir(parents=True)
    (tmp_path / "etc" / "OpenCL" / "vendors" / "intel.icd").write_text("libigdrcl.so\n")
    devices, note = _probe_devices(tmp_path)
    assert [(d.name, d.kind) for d in devices] == [("GPU", "gpu"), ("CPU", "cpu")] and note == ""


def test_probe_reports_a_missing_runtime_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from phi3_openvino import plugin

    monkeypatch.setattr(plugin, "module_available", lambda name: name not in ("openvino_genai", "optimum"))
    info = plugin.phi3_backend_info()
    assert info.status is phi3.BackendStatus.MISSING_DEPENDENCY
    assert "pip install" in info.detail and info.default_engine is None
    monkeypatch.setattr(plugin, "module_available", lambda name: name != "openvino_genai")
    info = plugin.phi3_backend_info()
    assert info.status is phi3.BackendStatus.AVAILABLE and info.default_engine == "optimum"
