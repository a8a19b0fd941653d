"""``tools`` reach the model's own chat template on both engines (``BackendInfo.chat_template_tools``),
and structured output is declared per engine: regex on genai (CPU override), nothing on the library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _npu_common import GENAI, LIBRARY

import phi3

TOOLS_TEMPLATE = (
    "{% if tools %}<|system|>\ntools:{% for tool in tools %} {{ tool['function']['name'] }}{% endfor %}"
    "<|end|>\n{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}},
]
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tools_checkpoint(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("tools") / "tiny-tools"
    shutil.copytree(tiny_phi3, target)
    (target / "chat_template.jinja").write_text(TOOLS_TEMPLATE, encoding="utf-8")
    config = json.loads((target / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = TOOLS_TEMPLATE
    (target / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


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
        rendered = model.apply_chat_template(MESSAGES, tools=TOOLS)
        assert rendered == "<|system|>\ntools: get_weather add<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
        assert model.apply_chat_template(MESSAGES) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
        assert model.structured_output == declared
