"""Structured output through ONNX Runtime GenAI's guidance (``GeneratorParams.set_guidance``).

onnxruntime-genai compiles the grammar with llguidance against the model's own tokenizer and masks
every decoding step with it, on every execution provider (checked here on the CPU provider with
0.18.0 and with the DirectML users' 0.13.1). phi3 maps its constraints onto it:

- ``json_schema`` -> guidance type ``"json_schema"``; ``json_object`` -> the schema
  ``{"type": "object"}``. Both compact: llguidance's ``x-guidance`` schema extension
  ``{"whitespace_flexible": false}`` (``,`` and ``:`` with no spaces or newlines), because a small
  model given free whitespace between tokens fills its whole budget with it (a user's own
  ``x-guidance`` settings win).
- ``regex`` -> guidance type ``"regex"`` (llguidance matches the whole output).

A runtime built without guidance (or older than the API) cannot enforce anything: :func:`enforced`
finds out at load, by compiling a one-character grammar, and the session then declares nothing.
Nor does a runtime older than :data:`GUIDANCE_MIN_VERSION`: onnxruntime-genai 0.13.1 (the newest
onnxruntime-genai-directml a DirectML user can install) has ``set_guidance``, but a sampled JSON
decode aborts the whole process there (a libstdc++ assertion, ``string_view::operator[]``, inside
``generate_next_token``); versions between 0.13.1 and 0.18.0 were not checked. The dml_skew session
holds a strict xfail that reproduces the abort under 0.13.1.
"""

from __future__ import annotations

import json
from typing import Any

from phi3.errors import UnsupportedError
from phi3.types import CONSTRAINT_KINDS, ConstraintKind, OutputConstraint

from phi3_dml import compat

GUIDANCE_MIN_VERSION = "0.18.0"
"""The oldest onnxruntime-genai whose guidance phi3 has seen hold (greedy and sampled, every kind)."""

COMPACT_JSON = {"whitespace_flexible": False}
"""llguidance's JSON options (the ``x-guidance`` schema key) phi3 sets unless the schema sets them."""


def enforced(og: Any, model: Any) -> tuple[ConstraintKind, ...]:
    """The kinds this runtime enforces for ``model``: all of them if ``set_guidance`` works, else none."""
    if not hasattr(og.GeneratorParams, "set_guidance"):
        return ()
    version = getattr(og, "__version__", "0")
    if compat.parse_version(version) < compat.parse_version(GUIDANCE_MIN_VERSION):
        return ()
    try:
        og.GeneratorParams(model).set_guidance("regex", "a")
    except Exception:  # e.g. a build without llguidance
        return ()
    return CONSTRAINT_KINDS


def guidance(constraint: OutputConstraint) -> tuple[str, str]:
    """``(type, data)`` for ``GeneratorParams.set_guidance``."""
    if constraint.kind == "regex":
        return "regex", constraint.spec
    schema = json.loads(constraint.spec)
    if isinstance(schema, dict):
        options = schema.get("x-guidance")
        schema["x-guidance"] = {**COMPACT_JSON, **(options if isinstance(options, dict) else {})}
    return "json_schema", json.dumps(schema, ensure_ascii=False)


def _refused(constraint: OutputConstraint, exc: BaseException) -> UnsupportedError:
    return UnsupportedError(
        f"onnxruntime-genai's guidance (llguidance) cannot enforce this {constraint.kind}: "
        + " ".join(str(exc).split())[:300],
        hint="simplify the schema or pattern (see llguidance's supported JSON Schema keywords)",
    )


def apply(params: Any, constraint: OutputConstraint | None) -> None:
    """Set ``constraint`` on ``params``; a grammar llguidance rejects is an ``UnsupportedError``."""
    if constraint is None:
        return
    kind, data = guidance(constraint)
    try:
        params.set_guidance(kind, data)
    except Exception as exc:
        raise _refused(constraint, exc) from exc


def generator(og: Any, model: Any, params: Any, constraint: OutputConstraint | None) -> Any:
    """``og.Generator(model, params)``: the runtime compiles the grammar here, so a schema llguidance
    rejects (e.g. an unknown ``format``) is an ``UnsupportedError`` before any token."""
    if constraint is None:
        return og.Generator(model, params)
    try:
        return og.Generator(model, params)
    except RuntimeError as exc:
        if "grammar" not in str(exc).lower():
            raise
        raise _refused(constraint, exc) from exc


__all__ = ["COMPACT_JSON", "GUIDANCE_MIN_VERSION", "apply", "enforced", "generator", "guidance"]
