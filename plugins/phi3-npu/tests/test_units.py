"""Pure-Python pieces: option validation, the NPU token budget, the worker protocol's errors."""

from __future__ import annotations

import pytest

import phi3
from phi3_npu import protocol
from phi3_npu.export import npu_recipe
from phi3_npu.genai_engine import token_budget
from phi3_npu.options import GenAISettings, resolve_group_size, resolve_load_options

PHI3_MINI = (3072, 8192)
TINY = (64, 128)


@pytest.mark.parametrize(
    ("options", "widths", "expected"),
    [
        ({}, PHI3_MINI, 128),
        ({}, TINY, -1),
        ({"group_size": -1}, PHI3_MINI, -1),
        ({"group_size": "128"}, PHI3_MINI, 128),
    ],
)
def test_group_size(options: dict[str, object], widths: tuple[int, int], expected: int) -> None:
    assert resolve_group_size("genai", "int4", options, widths) == expected


def _validate(engine: str, precision: str | None, options: dict[str, object]) -> dict[str, object]:
    """What phi3-core does with the user's options before any hook runs (the backend's declared specs)."""
    from phi3.options import validate_options
    from phi3_npu import plugin

    return validate_options(plugin.phi3_backend_info(), options, engine, precision)


@pytest.mark.parametrize(
    ("engine", "precision", "options", "match"),
    [
        ("genai", "int4", {"group_size": 64}, "group_size=64 is not allowed: it takes one of auto, 128, -1"),
        ("genai", "int8", {"group_size": 128}, "applies to precision int4 only, not int8"),
        ("npu-library", "int4", {"group_size": -1}, "applies to engine genai only, not npu-library"),
    ],
)
def test_bad_group_size_is_refused_by_phi3_core(
    engine: str, precision: str, options: dict[str, object], match: str
) -> None:
    with pytest.raises(phi3.ConfigError, match=match):
        _validate(engine, precision, options)


def test_group_size_128_must_divide_the_model() -> None:
    with pytest.raises(phi3.ConfigError, match="does not divide"):
        resolve_group_size("genai", "int4", {"group_size": 128}, TINY)


def test_recipe() -> None:
    assert npu_recipe("int4", 128) == {"group_size": 128, "ratio": 1.0, "sym": True}
    assert npu_recipe("int8", None) == {"sym": True}
    assert npu_recipe("fp16", None) == {}


def test_load_options() -> None:
    checked = _validate("genai", None, {"max_prompt_len": "2048", "generate_hint": "best_perf"})
    assert checked == {"max_prompt_len": 2048, "generate_hint": "BEST_PERF"}
    settings = resolve_load_options("genai", checked)
    assert settings == GenAISettings(max_prompt_len=2048, min_response_len=128, hints={"GENERATE_HINT": "BEST_PERF"})
    assert settings.npu_properties() == {"MAX_PROMPT_LEN": 2048, "MIN_RESPONSE_LEN": 128, "GENERATE_HINT": "BEST_PERF"}
    assert resolve_load_options("npu-library", {}) is None


@pytest.mark.parametrize(
    ("engine", "options", "match"),
    [
        ("genai", {"max_prompt_len": 0}, "max_prompt_len=0 is not allowed: it takes a whole number >= 1"),
        ("genai", {"min_response_len": True}, "min_response_len=True is not allowed"),
        ("genai", {"prefill_hint": "FAST"}, "it takes one of DYNAMIC, STATIC"),
        ("genai", {"ov_config": "not json"}, "it takes a mapping"),
        ("npu-library", {"max_prompt_len": 4}, "applies to engine genai only, not npu-library"),
    ],
)
def test_bad_load_options_are_refused_by_phi3_core(engine: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(phi3.ConfigError, match=match) as caught:
        _validate(engine, None, options)
    assert "\n" not in str(caught.value) and caught.value.hint


def test_npu_knobs_have_one_spelling() -> None:
    with pytest.raises(phi3.ConfigError, match="-O max_prompt_len"):
        resolve_load_options("genai", {"ov_config": {"MAX_PROMPT_LEN": 4}})


def test_token_budget() -> None:
    npu = GenAISettings(max_prompt_len=8, min_response_len=4)
    assert token_budget(8, 100, 512, npu) == 4
    assert token_budget(3, 5, 512, npu) == 5
    assert token_budget(3, 100, 6, npu) == 3  # the model's context is the tighter limit
    with pytest.raises(phi3.PromptTooLongError, match="MAX_PROMPT_LEN=8"):
        token_budget(9, 1, 512, npu)
    with pytest.raises(phi3.PromptTooLongError, match="context is 6"):
        token_budget(6, 1, 6, GenAISettings())


def test_protocol_errors_are_phi3_errors() -> None:
    error = protocol.to_exception(protocol.error_event("prompt_too_long", "too long", "shorten it"))
    assert isinstance(error, phi3.PromptTooLongError) and error.hint == "shorten it"
    assert isinstance(protocol.to_exception({"event": "error", "kind": "???"}), phi3.BackendError)
    assert protocol.decode('{"event": "end", "id": 3}') == {"event": "end", "id": 3}
    with pytest.raises(ValueError):
        protocol.decode("[1, 2]")


def test_each_engine_keys_its_artifacts_by_the_libraries_it_uses() -> None:
    """An OpenVINO upgrade re-exports genai artifacts but leaves the library engine's checkpoint copies."""
    from phi3_npu import plugin

    info = plugin.phi3_backend_info()
    engines = {engine.name: engine for engine in info.engines}
    library = engines[plugin.LIBRARY].library_versions
    assert library is not None and "phi3-npu" in library
    assert not {"openvino", "openvino-genai", "nncf"} & set(library)
    assert engines[plugin.GENAI].library_versions is None  # the backend's versions, OpenVINO included
    assert "openvino" in info.library_versions
