"""Backend options declared as typed specs are checked by core, once, before any hook runs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from phi3 import hookimpl
from phi3.cli import cli
from phi3.errors import ConfigError
from phi3.options import validate_options
from phi3.plugins import PluginRegistry, get_registry, reset_registry
from phi3.selection import split_options
from phi3.types import BackendInfo, BackendStatus, DeviceInfo, EngineInfo, OptionSpec

SPECS = (
    OptionSpec("group_size", "int", "int4 group size", default="auto", min=1, choices=("auto", -1), artifact=True),
    OptionSpec("ratio", "float", "int4 share", default=0.6, min=0, max=1, exclusive_min=True, artifact=True),
    OptionSpec("sym", "bool", "symmetric", aliases={"sym": True, "asym": False}, artifact=True, precisions=("int4",)),
    OptionSpec("hint", "choice", "compiler effort", choices=("FAST", "BEST"), engines=("a",)),
    OptionSpec("threads", "int", "threads", min=1, max=8),
    OptionSpec("config", "mapping", "vendor properties"),
)
INFO = BackendInfo(
    "spec",
    "a backend with option specs",
    (EngineInfo("a"), EngineInfo("b")),
    (DeviceInfo("cpu", "cpu"),),
    ("int4", "fp16"),
    BackendStatus.AVAILABLE,
    options=SPECS,
    load_options=("legacy",),
)


def test_specs_fill_the_option_name_lists() -> None:
    assert INFO.artifact_options == ("group_size", "ratio", "sym")
    assert INFO.load_options == ("legacy", "hint", "threads", "config")


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("group_size", "64", 64),
        ("group_size", "AUTO", "auto"),
        ("group_size", "-1", -1),
        ("group_size", -1, -1),
        ("ratio", "1", 1.0),
        ("ratio", 0.5, 0.5),
        ("sym", "false", False),
        ("sym", "asym", False),
        ("hint", "best", "BEST"),
        ("threads", 8, 8),
        ("config", '{"A": "f32", "B": 2}', {"A": "f32", "B": 2}),
        ("legacy", object, object),  # no spec: passed through unchecked (the older contract)
    ],
)
def test_values_are_coerced_to_their_type(name: str, given: Any, expected: Any) -> None:
    assert validate_options(INFO, {name: given}, "a", "int4") == {name: expected}


@pytest.mark.parametrize(
    ("name", "given", "allowed"),
    [
        ("group_size", 0, "a whole number >= 1, or auto or -1"),
        ("group_size", "sixty", "a whole number >= 1, or auto or -1"),
        ("group_size", True, "a whole number >= 1, or auto or -1"),
        ("ratio", 0, "a number > 0 and <= 1"),
        ("ratio", "nan", "a number > 0 and <= 1"),
        ("sym", "maybe", "true or false"),
        ("hint", "slow", "one of FAST, BEST"),
        ("threads", 9, "a whole number >= 1 and <= 8"),
        ("threads", 2.5, "a whole number >= 1 and <= 8"),
        ("config", "not json", "a mapping"),
        ("config", {"A": [1]}, "a mapping"),
    ],
)
def test_a_bad_value_is_one_line_naming_option_value_and_what_is_allowed(name: str, given: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(INFO, {name: given}, "a", "int4")
    message = str(caught.value)
    assert "\n" not in message
    assert f"option {name}={given!r}" in message
    assert allowed in message


def test_scope_engine_and_precision() -> None:
    with pytest.raises(ConfigError, match="hint applies to engine a only, not b"):
        validate_options(INFO, {"hint": "FAST"}, "b", "int4")
    with pytest.raises(ConfigError, match="sym applies to precision int4 only, not fp16"):
        validate_options(INFO, {"sym": True}, "a", "fp16")


def test_unknown_option_lists_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as caught:
        split_options(INFO, {"grup_size": 64})
    assert "grup_size" in str(caught.value) and "group_size" in (caught.value.hint or "")


def test_split_returns_checked_values() -> None:
    artifact, load = split_options(INFO, {"group_size": "32", "threads": "2"}, "a", "int4")
    assert artifact == {"group_size": 32} and load == {"threads": 2}


class SpecBackend:
    """An old-shape backend whose hooks record the options they receive."""

    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        return INFO

    @hookimpl
    def phi3_quantize(self, request: Any, output_dir: Path, progress: Any) -> Mapping[str, Any]:
        raise AssertionError("phi3_quantize must not run for a refused option")

    @hookimpl
    def phi3_load(self, request: Any) -> Any:
        raise AssertionError("phi3_load must not run for a refused option")

    @hookimpl
    def phi3_generate(self, session: Any, prompt: str, config: Any) -> Any:
        raise AssertionError

    @hookimpl
    def phi3_apply_chat_template(self, session: Any, messages: Any) -> str:
        raise AssertionError


def test_list_backends_shows_the_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI3_LOAD_PLUGINS", "")
    reset_registry()
    try:
        registry: PluginRegistry = get_registry()
        registry.register(SpecBackend(), "spec")
        runner = CliRunner()
        data = json.loads(runner.invoke(cli, ["list-backends", "--json"]).output)
        (entry,) = [b for b in data["backends"] if b["name"] == "spec"]
        by_name = {o["name"]: o for o in entry["options"]}
        assert by_name["ratio"]["type"] == "float" and by_name["ratio"]["max"] == 1
        assert by_name["ratio"]["allowed"] == "a number > 0 and <= 1"
        assert by_name["hint"]["engines"] == ["a"] and by_name["group_size"]["artifact"] is True
        human = runner.invoke(cli, ["list-backends"]).output
        assert "spec options (-O NAME=VALUE):" in human
        assert "ratio (artifact): a number > 0 and <= 1; default 0.6. int4 share" in human
        assert "options each accepts" in " ".join(runner.invoke(cli, ["list-backends", "--help"]).output.split())
    finally:
        reset_registry()


def test_a_refused_option_never_reaches_the_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import phi3

    monkeypatch.setenv("PHI3_LOAD_PLUGINS", "")
    monkeypatch.setenv("PHI3_HOME", str(tmp_path))
    reset_registry()
    try:
        get_registry().register(SpecBackend(), "spec")
        with pytest.raises(ConfigError, match=r"option threads=99 is not allowed"):
            phi3.load(str(tmp_path / "no-such-model"), backend="spec", device="cpu", threads=99)
    finally:
        reset_registry()
