"""Which regular expressions the genai engine can enforce honestly.

Workaround for openvino-genai 2026.4.1 (XGrammar inside): under a character class that admits
non-ASCII characters (``[^"]``, ``.``, ``\\S``, ``[à-ÿ]`` ...) its matcher accepts byte sequences that
are not UTF-8 (overlong forms, surrogates, F5+ lead bytes), so a decode can end as U+FFFD and miss
the pattern. phi3 promises that a declared constraint holds, so the genai engine refuses such
patterns (pointing at the optimum engine, whose llguidance matcher works on characters) and
enforces the rest. ``tests/test_structured.py`` holds the strict xfail that turns red when upstream
emits only valid UTF-8; then this check can go.

The pattern is parsed with Python's own regex parser (``re._parser``), not by hand; XGrammar's
dialect agrees with Python's on everything phi3 accepts (see ``phi3.structured_output``).
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

_PARSER: Any = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")
_C: Any = importlib.import_module("re._constants" if sys.version_info >= (3, 11) else "sre_constants")

_NEGATED_CATEGORIES = {"CATEGORY_NOT_DIGIT", "CATEGORY_NOT_WORD", "CATEGORY_NOT_SPACE"}


def non_ascii_class(pattern: str) -> str | None:
    """A description of the first part of ``pattern`` that lets a class match a non-ASCII
    character, or None when every class is ASCII-only (literal non-ASCII text is fine)."""
    try:
        parsed = _PARSER.parse(pattern)
    except re.error:
        return None  # phi3.structured_output refuses patterns that do not compile, before this
    return _walk(parsed)


def _walk(items: Any) -> str | None:
    for op, arg in items:
        name = str(op)
        if name == "ANY":
            return "'.' (any character)"
        if name == "NOT_LITERAL":
            return f"a negated character {chr(arg)!r}"
        if name == "IN":
            found = _class(arg)
            if found:
                return found
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
            found = _walk(arg[-1])
            if found:
                return found
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            found = _walk(arg[2])
            if found:
                return found
        elif name == "BRANCH":
            for branch in arg[1]:
                found = _walk(branch)
                if found:
                    return found
    return None


def _class(items: Any) -> str | None:
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            return "a negated class [^...]"
        if name == "LITERAL" and arg > 0x7F:
            return f"the non-ASCII character {chr(arg)!r} in a class"
        if name == "RANGE" and arg[1] > 0x7F:
            return f"the range {chr(arg[0])!r}-{chr(arg[1])!r}, which reaches past ASCII"
        if name == "CATEGORY" and str(arg) in _NEGATED_CATEGORIES:
            return "a negated class such as \\D, \\W or \\S"
    return None


__all__ = ["non_ascii_class"]
