"""Wrong types and empty values in the Python API are phi3 errors (ConfigError is also a ValueError).

Empty strings are never read as "the default": ``precision=""`` is refused, not int4.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3.generation_config import GenerationConfig


@pytest.mark.parametrize("model", [123, None, 1.5, b"phi3-mini-4k", ["phi3-mini-4k"], "", "   "])
def test_load_and_quantize_refuse_models_that_are_not_names(model: Any) -> None:
    for call in (phi3.load, phi3.quantize):
        with pytest.raises(phi3.ConfigError, match="model"):
            call(model, backend="reference")


@pytest.mark.parametrize("progress", [1, "bar", object()])
def test_progress_must_be_callable(tiny_phi3: Path, progress: Any) -> None:
    with pytest.raises(phi3.ConfigError, match="progress must be a callable"):
        phi3.load(tiny_phi3, backend="reference", precision="fp32", progress=progress)


@pytest.mark.parametrize("output", [123, 1.0, object(), "", " "])
def test_output_must_be_a_folder_name(tiny_phi3: Path, output: Any) -> None:
    with pytest.raises(phi3.ConfigError, match="output"):
        phi3.quantize(tiny_phi3, backend="reference", precision="fp32", output=output)


@pytest.mark.parametrize(
    ("field", "value"),
    [("precision", ""), ("precision", " "), ("precision", 4), ("backend", ""), ("engine", ""), ("device", "")],
)
def test_empty_strings_are_not_defaults(tiny_phi3: Path, field: str, value: Any) -> None:
    with pytest.raises(phi3.ConfigError, match=field):
        phi3.load(tiny_phi3, **{"backend": "reference", field: value})


def test_stop_none_means_no_stop_strings() -> None:
    assert GenerationConfig(stop=None).stop == ()  # type: ignore[arg-type]
    assert GenerationConfig(stop="x").stop == ("x",)


@pytest.mark.parametrize(
    "changes",
    [
        {"stop": 123},
        {"stop": b"x"},
        {"stop": {"a": 1}},
        {"stop": [""]},
        {"stop": [None]},
        {"top_k": 2**31},
        {"top_k": 2**40},
        {"top_k": -1},
        {"top_k": 1.5},
        {"max_new_tokens": 2**31},
        {"max_new_tokens": 0},
        {"max_new_tokens": True},
        {"seed": 2**32},
        {"seed": -1},
        {"temperature": 1e-40, "do_sample": True},
        {"temperature": 1e-5, "do_sample": True},
        {"temperature": math.inf},
        {"temperature": math.nan},
        {"temperature": 1e6},
        {"top_p": 0.0},
        {"top_p": math.nan},
        {"repetition_penalty": math.inf},
        {"repetition_penalty": 0},
        {"do_sample": "yes"},
        {"ignore_eos": 1},
    ],
)
def test_out_of_range_generation_values_are_config_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(phi3.ConfigError):
        GenerationConfig(**changes)
    with pytest.raises(ValueError):  # ConfigError is a ValueError too, for code that expects one
        GenerationConfig(**changes)


def test_values_the_runtimes_accept_still_pass() -> None:
    config = GenerationConfig(top_k=2**31 - 1, temperature=0.01, do_sample=True, seed=2**32 - 1, max_new_tokens=1)
    assert config.top_k == 2**31 - 1


def test_artifact_shaping_options_on_a_built_artifact_are_refused(tiny_phi3: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    phi3.quantize(tiny_phi3, backend="reference", precision="fp32", output=out)
    with pytest.raises(phi3.ConfigError, match="pause_after_write"):
        phi3.load(out, pause_after_write=1)


def test_a_disabled_backend_is_not_reported_as_missing(
    tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None
) -> None:
    monkeypatch.setenv("PHI3_DISABLE_PLUGINS", "reference")
    from phi3 import plugins

    plugins.reset_registry()
    if "reference" not in plugins.get_registry().disabled:
        pytest.skip("the reference backend distribution is not installed")
    with pytest.raises(phi3.Phi3Error, match="disabled by PHI3_LOAD_PLUGINS/PHI3_DISABLE_PLUGINS"):
        phi3.load(tiny_phi3, backend="reference", precision="fp32")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["generate", "", "Hi"], "the model argument is empty"),
        (["generate", " ", "Hi"], "the model argument is empty"),
        (["generate", "{model}", "Hi", "-b", "reference", "-p", ""], "precision must be a non-empty string"),
        (["generate", "{model}", "", "-b", "reference", "-p", "fp32"], "the prompt is empty"),
        (["quantize", "{model}", "-b", "reference", "-p", ""], "precision must be a non-empty string"),
        (["quantize", "{model}", "-b", "", "-p", "fp32"], "backend must be a non-empty string"),
    ],
)
def test_empty_values_on_the_command_line_are_refused(
    tiny_phi3: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    from _sandbox import make_sandbox, one_line_error

    sandbox = make_sandbox(tmp_path)
    error = one_line_error(sandbox.phi3(*(a.format(model=tiny_phi3) for a in args)))
    assert words in error
    assert not (sandbox.home / "artifacts").exists(), "an empty value was read as a default and built something"
