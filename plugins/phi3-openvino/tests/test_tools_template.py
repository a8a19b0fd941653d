"""``tools`` reach the model's own chat template (``BackendInfo.chat_template_tools``), on both engines.

The tiny checkpoint gets a template that lists the tools it is given (as Phi-4-mini's does in its
system turn), so a render shows whether they arrived; the standard Phi-3 template ignores tools.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _ov_common import F32

import phi3
from phi3.testing.structured import TEMPLATE_TOOLS, TOOLS_VARIABLE_TEMPLATE, with_chat_template

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def tools_checkpoint(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_chat_template(tiny_phi3, tmp_path_factory.mktemp("tools") / "tiny-tools", TOOLS_VARIABLE_TEMPLATE)


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_tools_reach_a_template_that_uses_them(tools_checkpoint: Path, engine: str) -> None:
    with phi3.load(tools_checkpoint, backend="openvino", device="CPU", precision="fp16", engine=engine, **F32) as model:
        rendered = model.apply_chat_template(MESSAGES, tools=TEMPLATE_TOOLS)
        assert rendered == "<|system|>\ntools: get_weather add<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
        assert model.apply_chat_template(MESSAGES) == "<|user|>\nHi<|end|>\n<|assistant|>\n"


@pytest.mark.parametrize("engine", ["genai", "optimum"])
def test_tools_reach_only_a_template_that_uses_them(
    tiny_phi3: Path, artifacts: dict[str, phi3.Artifact], engine: str
) -> None:
    """Phi-3's template has no ``tools``: the render is the same as without them. openvino-genai
    2026.4.1 (minja) would write a tool-use system prompt of its own; the genai engine does not pass
    tools to such a template."""
    with phi3.load(tiny_phi3, backend="openvino", device="CPU", precision="int8", engine=engine, **F32) as model:
        assert model.apply_chat_template(MESSAGES, tools=TEMPLATE_TOOLS) == model.apply_chat_template(MESSAGES)


def test_genai_would_otherwise_add_its_own_tool_prompt(artifacts: dict[str, phi3.Artifact]) -> None:
    """Why the genai engine checks the template first: genai renders tools into a template that never
    mentions them. If this stops holding, the check in GenAIEngine.apply_chat_template can go."""
    import openvino_genai

    tokenizer = openvino_genai.Tokenizer(str(artifacts["int8"].path))
    plain = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert "get_weather" in tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tools=TEMPLATE_TOOLS)
    assert "get_weather" not in plain
