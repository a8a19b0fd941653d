"""``tools`` reach the model's own chat template on both engines (``BackendInfo.chat_template_tools``),
and structured output is declared per engine: regex on genai (CPU override), nothing on the library."""

from __future__ import annotations

from pathlib import Path

import pytest
from _npu_common import GENAI, LIBRARY

import phi3
from phi3.testing.structured import TEMPLATE_TOOLS, TOOLS_VARIABLE_TEMPLATE, with_chat_template

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tools_checkpoint(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_chat_template(tiny_phi3, tmp_path_factory.mktemp("tools") / "tiny-tools", TOOLS_VARIABLE_TEMPLATE)


@pytest.mark.parametrize(
    ("where", "precision", "declared"),
    [(GENAI, "int4", ("regex",)), (LIBRARY, "int8", ())],
    ids=["genai", "npu-library"],
)
def test_tools_reach_the_template_and_declarations_hold(
    request: pytest.FixtureRequest,
    tools_checkpoint: Path,
    where: dict[str, str],
    precision: str,
    declared: tuple[str, ...],
) -> None:
    if where is LIBRARY:
        request.getfixturevalue("library_installed")
    with phi3.load(tools_checkpoint, precision=precision, **where) as model:
        rendered = model.apply_chat_template(MESSAGES, tools=TEMPLATE_TOOLS)
        assert rendered == "<|system|>\ntools: get_weather add<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
        assert model.apply_chat_template(MESSAGES) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
        assert model.structured_output == declared
