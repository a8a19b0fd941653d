"""JSON Schemas compiled to compact-JSON grammars for the ``genai`` engine.

openvino-genai 2026.4.1 compiles a ``StructuredOutputConfig(json_schema=...)`` with free whitespace
between tokens (XGrammar's ``any_whitespace``, hard-coded), and a small model can then spend its
whole budget on whitespace. So phi3 compiles the schema itself with the ``xgrammar`` package
(``Grammar.from_json_schema(any_whitespace=False, separators=(",", ":"))``: the same converter genai
bundles, without the whitespace) and hands genai the result as EBNF
(``StructuredOutputConfig(grammar=...)``). ``test_structured.py::
test_genai_json_grammar_still_has_free_whitespace_upstream`` turns red when upstream's own JSON
grammar closes.

The EBNF of xgrammar 0.2.8 is newer than the XGrammar inside openvino-genai 2026.4.1, and XGrammar
itself has two faults that matter here, so :func:`for_genai` rewrites it:

- ``{m, -1}`` (unbounded repetition, which genai's parser rejects: "Expect integer") becomes ``{m,}``;
- ``Regex("...", json_string=true)`` (a string ``pattern``; genai's parser has no ``Regex``) becomes
  rules compiled from the pattern by ``Grammar.from_regex``, whose literals are written JSON-escaped;
- every character class keeps only printable ASCII (0x20-0x7E). openvino-genai 2026.4.1's matcher
  accepts byte sequences that are not UTF-8 under a class that admits non-ASCII characters (see
  ``regex_classes``; ``test_genai_regex_non_ascii_class_emits_valid_utf8_upstream``), and xgrammar
  0.2.8 writes the characters of a length-bounded string as ``[^"\\\\\\r\\n]``, which admits raw
  control characters (tabs), invalid inside a JSON string. Any character stays expressible: JSON
  strings keep their ``\\uXXXX`` escapes (except where xgrammar 0.2.8 offers none: length-bounded
  strings are then ASCII), and literals (``enum``, ``const``, property names) are kept as they are.
  A class with nothing left (a pattern made only of non-ASCII classes) is refused.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from phi3.errors import UnsupportedError

SEPARATORS = (",", ":")
"""Compact JSON: no whitespace after commas and colons (xgrammar's own ``basic_*`` rules for values a
schema leaves open still write ``", "`` between array items and object members)."""

PRINTABLE = (0x20, 0x7E)
"""What a character class keeps (see the module docstring)."""

_NAMED_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "b": 0x08, "a": 0x07, "e": 0x1B, "0": 0x00}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REPETITION = re.compile(r"\{\s*(\d+)\s*(?:,\s*(-?\d+)\s*)?\}")
_REFUSAL_HINT = "use the optimum engine (-e optimum), whose llguidance matcher takes any schema"


class GrammarError(ValueError):
    """The EBNF could not be rewritten for genai (a construct this module does not know)."""


def _xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:  # a deployment that installed openvino-genai without phi3-openvino's deps
        raise UnsupportedError(
            f"the genai engine compiles JSON Schemas with the xgrammar package, which cannot be imported ({exc})",
            hint="pip install xgrammar, or " + _REFUSAL_HINT,
        ) from exc
    return xgrammar


@functools.lru_cache(maxsize=128)
def schema_ebnf(schema: str) -> str:
    """The compact-JSON grammar for ``schema`` (a JSON Schema as text), as genai's EBNF.

    ``UnsupportedError`` when xgrammar cannot compile the schema or a pattern needs characters this
    engine cannot guarantee (see the module docstring); both name the optimum engine.
    """
    xgrammar = _xgrammar()
    marker = f"phi3-pattern-{secrets.token_hex(8)}-"
    patterns: list[str] = []
    try:
        replaced = _replace_patterns(json.loads(schema), marker, patterns)
    except GrammarError as exc:
        raise UnsupportedError(f"the genai engine cannot enforce this JSON Schema: {exc}", hint=_REFUSAL_HINT) from exc
    try:
        # strict_mode=False: properties the schema allows (additionalProperties unset) stay allowed
        grammar = xgrammar.Grammar.from_json_schema(
            json.dumps(replaced), any_whitespace=False, separators=SEPARATORS, strict_mode=False
        )
    except Exception as exc:
        raise UnsupportedError(
            f"the genai engine cannot enforce this JSON Schema: xgrammar rejects it ({_one_line(exc)})",
            hint=_REFUSAL_HINT,
        ) from exc

    def regex_rules(pattern: str, prefix: str) -> str:
        try:
            compiled = str(xgrammar.Grammar.from_regex(pattern))
        except Exception as exc:
            raise UnsupportedError(
                f"the genai engine cannot enforce the pattern {pattern!r}: xgrammar rejects it ({_one_line(exc)})",
                hint=_REFUSAL_HINT,
            ) from exc
        return _rewrite(compiled, rename=lambda name: prefix + name, json_string=True, regex=None)

    placeholders = {json.dumps(marker + str(k)): pattern for k, pattern in enumerate(patterns)}
    try:
        return for_genai(str(grammar), regex_rules, placeholders)
    except GrammarError as exc:
        raise UnsupportedError(f"the genai engine cannot enforce this JSON Schema: {exc}", hint=_REFUSAL_HINT) from exc


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
"""Keywords whose value maps names to subschemas."""
_DATA = frozenset({"enum", "const", "default", "examples", "required", "dependentRequired"})
"""Keywords whose value is data, not a subschema."""


def _replace_patterns(node: Any, marker: str, patterns: list[str]) -> Any:
    """``node`` with each string ``pattern`` replaced by a ``const`` placeholder (``marker`` + index).

    xgrammar 0.2.8 writes some patterns as rules inline, without JSON-escaping their literals or
    keeping ``"`` and ``\\`` out of their classes (a ``"`` in the pattern ends the JSON string early);
    the placeholder's literal is replaced by rules built here for a JSON string (:func:`for_genai`).
    """
    if isinstance(node, list):
        return [_replace_patterns(item, marker, patterns) for item in node]
    if not isinstance(node, dict):
        return node
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        others = sorted(set(node) & {"minLength", "maxLength", "format", "enum", "const"})
        if others:
            raise GrammarError(f"pattern together with {', '.join(others)} in one schema")
        if node.get("type", "string") != "string":
            raise GrammarError(f"pattern on a schema of type {node['type']!r} (only type string)")
        patterns.append(pattern)
        kept = {key: value for key, value in node.items() if key in ("title", "description", "$comment")}
        return {**kept, "const": marker + str(len(patterns) - 1)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DATA:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _replace_patterns(sub, marker, patterns) for name, sub in value.items()}
        else:
            out[key] = _replace_patterns(value, marker, patterns)
    return out


def for_genai(ebnf: str, regex_rules: Callable[[str, str], str], placeholders: dict[str, str] | None = None) -> str:
    """``ebnf`` (xgrammar 0.2.8's printer) rewritten for openvino-genai 2026.4.1's parser; see the module
    docstring. ``regex_rules(pattern, prefix)`` returns the rules for a pattern inside a JSON string,
    whose root rule is ``prefix + "root"``: for each ``Regex(...)`` call, and for each literal that is a
    key of ``placeholders`` (the text of a literal, a JSON string, standing for the pattern it maps to)."""
    extra: list[str] = []

    def regex(pattern: str) -> str:
        prefix = f"phi3_re{len(extra)}_"
        extra.append(regex_rules(pattern, prefix))
        return f"({prefix}root)"

    def placeholder(literal: str) -> str | None:
        pattern = (placeholders or {}).get(literal)
        return None if pattern is None else f'("\\"" {regex(pattern)} "\\"")'

    main = _rewrite(ebnf, rename=None, json_string=False, regex=regex, placeholder=placeholder)
    return "\n".join([main, *extra]).strip() + "\n"


def _rewrite(
    ebnf: str,
    *,
    rename: Callable[[str], str] | None,
    json_string: bool,
    regex: Callable[[str], str] | None,
    placeholder: Callable[[str], str | None] | None = None,
) -> str:
    """One pass over the EBNF text, copying everything except what must change."""
    out: list[str] = []
    i, n = 0, len(ebnf)
    while i < n:
        char = ebnf[i]
        if char == '"':
            end = _literal_end(ebnf, i)
            if json_string:  # a literal inside a JSON string (a pattern's): write it JSON-escaped
                value = _decode(ebnf[i + 1 : end - 1])
                out.append(_encode_literal(json.dumps(value)[1:-1]))
            else:
                literal = ebnf[i:end]
                found = placeholder(_decode(literal[1:-1])) if placeholder else None
                out.append(found or literal)
            i = end
        elif char == "[":
            end = _class_end(ebnf, i)
            out.append(_printable_class(ebnf[i:end], json_string))
            i = end
        elif char == "{":
            match = _REPETITION.match(ebnf, i)
            if match is None:
                raise GrammarError(f"unknown construct at {ebnf[i : i + 20]!r}")
            low, high = match.group(1), match.group(2)
            if high is None:
                out.append(f"{{{low}}}")
            elif int(high) < 0:
                out.append(f"{{{low},}}")
            else:
                out.append(f"{{{low},{high}}}")
            i = match.end()
        elif char.isalpha() or char == "_":
            match = _IDENTIFIER.match(ebnf, i)
            assert match is not None
            name = match.group(0)
            i = match.end()
            if ebnf.startswith("(", i):  # a built-in call such as Regex(...)
                if name != "Regex" or regex is None:
                    raise GrammarError(f"{name}(...) is not supported by openvino-genai 2026.4.1's grammar parser")
                start = i + 1
                if start >= n or ebnf[start] != '"':
                    raise GrammarError(f"unexpected Regex call at {ebnf[i : i + 30]!r}")
                end = _literal_end(ebnf, start)
                close = ebnf.find(")", end)
                if close < 0:
                    raise GrammarError("unterminated Regex call")
                out.append(regex(_decode(ebnf[start + 1 : end - 1])))
                i = close + 1
            else:
                out.append(rename(name) if rename else name)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _literal_end(text: str, start: int) -> int:
    """Index after the closing quote of the literal opening at ``start``."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    raise GrammarError("unterminated string literal")


def _class_end(text: str, start: int) -> int:
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == "]":
            return i + 1
        else:
            i += 1
    raise GrammarError("unterminated character class")


def _codepoints(body: str) -> list[int]:
    """The code points of an escaped literal or class body, with ``-1`` for an unescaped ``-``."""
    points: list[int] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            points.append(-1 if char == "-" else ord(char))
            i += 1
            continue
        if i + 1 >= len(body):
            raise GrammarError("a trailing backslash")
        code = body[i + 1]
        if code in _HEX_ESCAPES:
            width = _HEX_ESCAPES[code]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise GrammarError(f"a malformed escape {body[i : i + 2 + width]!r}")
            points.append(int(digits, 16))
            i += 2 + width
        else:
            points.append(_NAMED_ESCAPES.get(code, ord(code)))
            i += 2
    return points


def _decode(body: str) -> str:
    return "".join(chr(p) if p >= 0 else "-" for p in _codepoints(body))


def _encode_literal(text: str) -> str:
    """``text`` (ASCII here: JSON-escaped with ``ensure_ascii``) as an EBNF string literal."""
    return (
        '"'
        + "".join(c if c.isalnum() or c in " _-.,:;!?@#$%&*+=/<>~^`'|(){}[]" else f"\\x{ord(c):02x}" for c in text)
        + '"'
    )


def _printable_class(text: str, json_string: bool) -> str:
    """A class ``[...]`` narrowed to :data:`PRINTABLE` (less ``"`` and ``\\`` inside a JSON string, where
    they would need an escape) and written as a positive class."""
    body = text[1:-1]
    negated = body.startswith("^")
    points = _codepoints(body[1:] if negated else body)
    ranges: list[tuple[int, int]] = []
    i = 0
    while i < len(points):
        low = ord("-") if points[i] == -1 else points[i]
        if i + 2 < len(points) and points[i + 1] == -1:
            high = ord("-") if points[i + 2] == -1 else points[i + 2]
            ranges.append((low, high))
            i += 3
        else:
            ranges.append((low, low))
            i += 1
    lowest, highest = PRINTABLE
    allowed = [
        c
        for c in range(lowest, highest + 1)
        if any(low <= c <= high for low, high in ranges) != negated and not (json_string and chr(c) in '"\\')
    ]
    if not allowed:
        raise GrammarError(
            f"the character class {text} admits no printable ASCII character, and openvino-genai 2026.4.1 "
            "can emit bytes that are not UTF-8 under a class that admits others"
        )
    spans: list[tuple[int, int]] = []
    for c in allowed:
        if spans and spans[-1][1] == c - 1:
            spans[-1] = (spans[-1][0], c)
        else:
            spans.append((c, c))
    return "[" + "".join(f"\\x{a:02x}" if a == b else f"\\x{a:02x}-\\x{b:02x}" for a, b in spans) + "]"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


__all__ = ["PRINTABLE", "SEPARATORS", "GrammarError", "for_genai", "schema_ebnf"]
