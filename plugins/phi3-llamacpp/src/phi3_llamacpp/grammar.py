"""phi3's output constraints as GBNF grammars for llama.cpp's grammar sampler.

The grammar text comes from llama-cpp-python's own JSON-Schema-to-GBNF converter
(``llama_cpp.llama_grammar.SchemaConverter``, a port of llama.cpp's ``json_schema_to_grammar.py``);
llama.cpp parses it in ``llama_sampler_init_grammar``. Its whitespace rule is ``" "?`` (at most one
space between tokens), so a random-weight model cannot wander in whitespace.

Declared kinds (:data:`KINDS`):

- ``json_object``: the converter on ``{"type": "object"}`` (its generic JSON object rule), with
  its string-character rule replaced by the one of llama.cpp's own converter (see
  :data:`JSON_CHAR_RULE`).
- ``regex``: the converter's regex translator (``_visit_pattern`` with ``raw_pattern=True``: the
  pattern itself, no JSON quotes), anchored so that the whole output must match. Patterns it cannot
  translate (lookaround, ``\\d``/``\\w`` classes, escapes GBNF lacks) are refused by the converter or
  by llama.cpp's grammar parser: :class:`phi3.UnsupportedError` before decoding.

Not declared: ``json_schema``. llama-cpp-python 0.3.36's converter drops ``minimum``/``maximum``
(and ``exclusive*``, ``multipleOf``) of numbers without a word (its own ``TODO``), so a schema
with a bounded integer would decode out of range; llama.cpp's C++ converter that handles them
(``common/json-schema-to-grammar.cpp``) is not in the wheel's libraries.
"""

from __future__ import annotations

import re
from typing import Any

from phi3.errors import UnsupportedError
from phi3.types import ConstraintKind, OutputConstraint

KINDS: tuple[ConstraintKind, ...] = ("json_object", "regex")

JSON_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
r"""A character inside a JSON string. Workaround for llama-cpp-python 0.3.36: its converter's
``char`` rule is ``[^"\\] | ...``, which lets raw control characters (newline, tab, NUL) into
strings, and JSON forbids them (``json.loads`` refuses the output); llama.cpp's C++ converter in the
same release (``common/json-schema-to-grammar.cpp``) excludes ``\x00-\x1F`` and ``\x7F``, as here.
Pinned by a strict xfail in ``tests/test_structured.py`` that turns red when the port is fixed."""

_STRAY_ANCHOR = re.compile(r"(?<!\\)\[(?:\\.|[^\]\\])*\]|\\.|([\^$])")


def _converter() -> Any:
    from llama_cpp.llama_grammar import BuiltinRule, SchemaConverter

    class Converter(SchemaConverter):  # type: ignore[misc]  # untyped vendor class
        def _add_primitive(self, name: str, rule: Any) -> Any:
            if name == "char":
                rule = BuiltinRule(JSON_CHAR_RULE, [])
            return super()._add_primitive(name, rule)

    return Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=True)


def _bare_pattern(pattern: str) -> str:
    """``pattern`` without a redundant leading ``^`` / trailing ``$`` (phi3's regex is a full match);
    any other anchor would become a literal character in the converter's output: refused."""
    body = pattern[1:] if pattern.startswith("^") else pattern
    if body.endswith("$") and not body.endswith("\\$"):
        body = body[:-1]
    if any(match.group(1) for match in _STRAY_ANCHOR.finditer(body)):
        raise UnsupportedError(
            f"regex {pattern!r}: anchors (^, $) inside the pattern cannot be enforced by phi3-llamacpp's grammar",
            hint="drop them: the whole output must match the pattern anyway",
        )
    return body


def gbnf(constraint: OutputConstraint) -> str:
    """The GBNF grammar (root rule ``root``) for ``constraint``, or :class:`UnsupportedError`."""
    if constraint.kind not in KINDS:
        raise UnsupportedError(
            f"{constraint.kind} output is not supported by phi3-llamacpp (it supports {', '.join(KINDS)})",
            hint="use another backend for JSON Schema output, or constrain with json_object",
        )
    converter = _converter()
    if constraint.kind == "json_object":
        schema: dict[str, Any] = {"type": "object"}
    else:
        schema = {"type": "string", "pattern": f"^({_bare_pattern(constraint.spec)})$"}
    try:
        converter.visit(converter.resolve_refs(schema, "phi3"), "")
    except (AssertionError, ValueError, KeyError, IndexError) as exc:
        raise UnsupportedError(
            f"{constraint.kind} {constraint.spec!r} cannot be turned into a llama.cpp grammar: {exc}",
            hint="simplify the pattern (no lookaround, backreferences or (?...) groups)",
        ) from exc
    return str(converter.format_grammar())


__all__ = ["KINDS", "gbnf"]
