"""Names that moved out of phi3_openvino.api still resolve for one release, with a warning."""

from __future__ import annotations

import importlib

import pytest

from phi3.integrations import transformers_generation

MOVED = ("longrope_switch", "sampling_seed", "to_transformers")


@pytest.mark.parametrize("name", MOVED)
def test_a_moved_name_warns_and_is_the_core_function(name: str) -> None:
    api = importlib.import_module("phi3_openvino.api")
    with pytest.warns(DeprecationWarning, match=rf"from phi3\.integrations\.transformers_generation import {name}"):
        alias = getattr(api, name)
    assert alias is getattr(transformers_generation, name)
    assert name not in api.__all__, "a deprecated alias is not part of the public API any more"


def test_from_import_of_a_moved_name_warns() -> None:
    with pytest.warns(DeprecationWarning, match=r"phi3_openvino\.api\.to_transformers is deprecated"):
        from phi3_openvino.api import to_transformers
    assert to_transformers is transformers_generation.to_transformers


def test_current_names_do_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    from phi3_openvino.api import DEFAULT_OV_CONFIG, context_length

    assert DEFAULT_OV_CONFIG and callable(context_length)
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
