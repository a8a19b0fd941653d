"""Schemas and patterns the conformance suite constrains decoding with.

Each one is bounded (string lengths, array sizes, number ranges, enums) so that a constrained
decode terminates even on the tiny random-weight model, which left alone never emits JSON: if the
output validates, the grammar did it. They cover what apps send: nested objects, arrays, enums,
required fields and strings with patterns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SCHEMAS: dict[str, dict[str, Any]] = {
    "flat_required": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "member": {"type": "boolean"},
        },
        "required": ["name", "age", "member"],
        "additionalProperties": False,
    },
    "nested_with_array": {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 9999},
                    "items": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 8},
                        "minItems": 1,
                        "maxItems": 3,
                    },
                },
                "required": ["id", "items"],
                "additionalProperties": False,
            }
        },
        "required": ["order"],
        "additionalProperties": False,
    },
    "enum_and_pattern": {
        "type": "object",
        "properties": {
            "status": {"enum": ["open", "closed", "pending"]},
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        },
        "required": ["status", "code"],
        "additionalProperties": False,
    },
}

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
"""An OpenAI function tool with bounded arguments, for tool-calling tests (API and server)."""

TOOLS_VARIABLE_TEMPLATE = (
    "{% if tools %}<|system|>\ntools:{% for tool in tools %} {{ tool['function']['name'] }}{% endfor %}"
    "<|end|>\n{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""A chat template that reads the Hugging Face ``tools`` variable (as Llama 3.1's or Qwen's do): tests
of ``BackendInfo.chat_template_tools`` check that the names of :data:`TEMPLATE_TOOLS` reach it."""

TEMPLATE_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}},
]


def with_chat_template(source: Path, target: Path, template: str) -> Path:
    """A copy of the checkpoint ``source`` at ``target`` whose chat template is ``template``, in both
    places runtimes read it (``chat_template.jinja`` and ``tokenizer_config.json``)."""
    shutil.copytree(source, target)
    (target / "chat_template.jinja").write_text(template, encoding="utf-8")
    config = json.loads((target / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = template
    (target / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


REGEX = r"(yes|no), [0-9]{1,3} (apples|pears)"
"""A pattern the whole output must match (``re.fullmatch``)."""

SEEDS = (1, 2, 3, 4, 5, 6)
"""Sampled decodes per case: sampling explores many paths through the grammar, greedy only one."""

__all__ = [
    "REGEX",
    "SCHEMAS",
    "SEEDS",
    "TEMPLATE_TOOLS",
    "TOOLS_VARIABLE_TEMPLATE",
    "WEATHER_TOOL",
    "with_chat_template",
]
