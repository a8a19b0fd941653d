"""Checks for structured-output requests, so every backend receives one it can compile.

A bad schema or pattern is the user's mistake: it is reported as one line before any backend
runs, instead of surfacing as a vendor grammar compiler's traceback halfway through a request.
JSON Schemas are checked against their own meta-schema with ``jsonschema`` (imported only when a
schema is given, so ``import phi3`` stays light).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

JSON_OBJECT_SCHEMA = '{"type":"object"}'
"""What ``json_object=True`` means, as a schema for runtimes whose only entry point is a schema."""

MAX_SPEC_CHARS = 1_000_000
"""Grammar compilers build automata from these; an absurd size is refused rather than compiled."""

_UNSUPPORTED_REGEX = re.compile(r"\(\?[=!<]|\\[1-9]|\(\?P=")
"""Lookaround and backreferences: grammar engines (XGrammar, llguidance) cannot enforce them."""


def schema_text(schema: Mapping[str, Any]) -> str:
    """A schema as compact JSON text, property order kept (it is the order fields are generated in)."""
    try:
        return json.dumps(schema, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"<not JSON: {exc}>"  # reported by problems(): the text does not parse


def problems(json_schema: object, json_object: object, regex: object) -> list[str]:
    """What is wrong with these fields (empty when they form one valid request or none)."""
    found: list[str] = []
    if not isinstance(json_object, bool):
        found.append(f"json_object must be true or false, got {json_object!r}")
    chosen = [
        name
        for name, on in (
            ("json_schema", json_schema is not None),
            ("json_object", json_object is True),
            ("regex", regex is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        found.append(f"give at most one of json_schema, json_object and regex, got {', '.join(chosen)}")
    if json_schema is not None:
        found.extend(_schema_problems(json_schema))
    if regex is not None:
        found.extend(_regex_problems(regex))
    return found


def _schema_problems(text: object) -> list[str]:
    if not isinstance(text, str):
        return [f"json_schema must be a JSON Schema (a dict or its JSON text), got {type(text).__name__}"]
    if len(text) > MAX_SPEC_CHARS:
        return [f"json_schema is {len(text)} characters; the limit is {MAX_SPEC_CHARS}"]
    try:
        schema = json.loads(text)
    except ValueError as exc:
        return [f"json_schema is not valid JSON ({exc})"]
    if not isinstance(schema, dict):
        return [f"json_schema must be a JSON object (a schema), got {type(schema).__name__}"]
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - a dependency of phi3-core
        return ['json_schema needs the jsonschema package: pip install "jsonschema>=4.18"']
    validator = _validator_class(jsonschema, schema.get("$schema"))
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        return [f"json_schema is not a valid JSON Schema at {where}: {exc.message}"]
    return []


def _validator_class(jsonschema: Any, uri: object) -> Any:
    """The validator for ``$schema`` however tools spell it: http or https, with or without the
    trailing ``#`` (LiteLLM's tests send ``https://json-schema.org/draft-07/schema``); the latest
    draft for none or a dialect jsonschema does not know (a custom meta-schema is never fetched)."""
    if isinstance(uri, str):
        bare = uri.strip().rstrip("#")
        for scheme in ("", "http://", "https://"):
            base = scheme + bare.split("://", 1)[-1] if scheme else bare
            for candidate in (base, base + "#"):
                found = jsonschema.validators.validator_for({"$schema": candidate}, default=None)
                if found is not None:
                    return found
    return jsonschema.validators.validator_for({})


def _regex_problems(pattern: object) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        return [f"regex must be a non-empty string, got {pattern!r}"]
    if len(pattern) > MAX_SPEC_CHARS:
        return [f"regex is {len(pattern)} characters; the limit is {MAX_SPEC_CHARS}"]
    try:
        re.compile(pattern)
    except re.error as exc:
        return [f"regex does not compile ({exc})"]
    if _UNSUPPORTED_REGEX.search(pattern):
        return ["regex uses lookaround or a backreference, which constrained decoding cannot enforce: rewrite it"]
    return []


IDENTITY_KEYWORDS = ("$schema", "$id", "id")
"""Keywords that name a schema or its dialect rather than constrain a value. Grammar compilers
(llguidance, XGrammar, llama.cpp's converter) may try to resolve them as URIs (llguidance 1.9.1
fails on ``"$schema": "https://json-schema.org/draft-07/schema"`` without a ``#`` and on an ``$id``
it cannot fetch); phi3 never fetches a schema from the network."""


def for_grammar(schema_text_: str) -> str:
    """The schema a grammar compiler gets: the same constraints, without ``$schema`` / ``$id``.

    ``$ref`` values that point into the document through its own ``$id`` (``"https://x/s#/$defs/A"``
    with ``"$id": "https://x/s"``) become local (``"#/$defs/A"``), so dropping the ``$id`` keeps every
    reference resolvable. ``id`` is dropped only where it names a schema (draft-04 style, a string
    beside other schema keywords), never a property called ``id``.
    """
    schema = json.loads(schema_text_)
    if not isinstance(schema, dict):
        return schema_text_
    root_id = schema.get("$id") if isinstance(schema.get("$id"), str) else None
    bases = {root_id, root_id.rstrip("#")} - {None, ""} if root_id else set()

    def clean(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not in_properties and key in ("$schema", "$id"):
                continue
            if not in_properties and key == "id" and isinstance(value, str) and _names_a_schema(value):
                continue
            if not in_properties and key == "$ref" and isinstance(value, str):
                out[key] = _local_ref(value, bases)
                continue
            out[key] = clean(value, in_properties=not in_properties and key in _SCHEMA_MAPS)
        return out

    return schema_text(clean(schema))


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
"""Keywords whose value maps names (chosen by the schema's author, e.g. a property ``$id``) to schemas."""


def _names_a_schema(value: str) -> bool:
    return "://" in value or value.startswith(("#", "urn:"))


def _local_ref(ref: str, bases: set[str]) -> str:
    for base in bases:
        if ref == base or ref.startswith(base + "#"):
            return "#" + ref[len(base) :].removeprefix("#")
    return ref


def validate_output(text: str, json_schema: str) -> None:
    """Raise ``jsonschema.ValidationError`` / ``ValueError`` unless ``text`` is JSON valid against the schema.

    For tests and callers that want to re-check a result; constrained decoding already guarantees it
    for outputs that were not cut short by ``max_new_tokens``.
    """
    import jsonschema

    jsonschema.validate(json.loads(text), json.loads(json_schema))


__all__ = ["JSON_OBJECT_SCHEMA", "MAX_SPEC_CHARS", "for_grammar", "problems", "schema_text", "validate_output"]
