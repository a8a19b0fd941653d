"""Schemas and patterns the conformance suite constrains decoding with.

Each one is bounded (string lengths, array sizes, number ranges, enums) so that a constrained
decode terminates even on the tiny random-weight model, which left alone never emits JSON: if the
output validates, the grammar did it. They cover what apps send: nested objects, arrays, enums,
required fields and strings with patterns.
"""

from __future__ import annotations

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

REGEX = r"(yes|no), [0-9]{1,3} (apples|pears)"
"""A pattern the whole output must match (``re.fullmatch``)."""

SEEDS = (1, 2, 3, 4, 5, 6)
"""Sampled decodes per case: sampling explores many paths through the grammar, greedy only one."""

__all__ = ["REGEX", "SCHEMAS", "SEEDS", "WEATHER_TOOL"]
