"""Structured output on llama.cpp with llguidance's token masks, and the sampling controls that run
after the mask (the conformance suite checks every declared kind on its own schemas and patterns).

Every constrained answer is validated with ``jsonschema`` (``phi3.structured_output.validate_output``)
over a greedy decode and seeded samples at a high temperature: the tiny random-weight model never
writes JSON by itself, so an answer that validates was made valid by the mask. The schemas' valid
answers are short (enums, bounded numbers, booleans, short strings), so the budget always fits one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3.structured_output import validate_output
from phi3_llamacpp.grammar import KINDS

PROMPT = "The quick brown fox"
PATTERN = r"(red|green|blue)-[a-c]{2,4}"
BUDGET = 96
SEEDS = (1, 2, 3, 4, 5)

BOUNDED: dict[str, dict[str, Any]] = {
    "integer_bounds": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 7}},
        "required": ["n"],
        "additionalProperties": False,
    },
    "exclusive_bounds": {
        "type": "object",
        "properties": {
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "k": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 3},
        },
        "required": ["x", "k"],
        "additionalProperties": False,
    },
    "enum_and_short_string": {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["red", "green", "blue"]},
            "tag": {"type": "string", "minLength": 2, "maxLength": 4},
            "ok": {"type": "boolean"},
        },
        "required": ["color", "tag", "ok"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -5, "maximum": 5},
                    "y": {"type": "integer", "minimum": 10, "maximum": 12},
                },
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
        },
        "required": ["point", "flags"],
        "additionalProperties": False,
    },
    "defs_and_ref": {
        "$defs": {
            "level": {"type": "integer", "minimum": 1, "maximum": 3},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "type": "object",
        "properties": {"level": {"$ref": "#/$defs/level"}, "unit": {"$ref": "#/$defs/unit"}},
        "required": ["level", "unit"],
        "additionalProperties": False,
    },
    "recursive": {
        # a pydantic-style recursive model: a node with optional children of the same kind
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer", "minimum": 0, "maximum": 9},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 1},
                },
                "required": ["v"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    },
}


@pytest.fixture(scope="module")
def model(tiny_phi3: Path) -> Iterator[phi3.Model]:
    with phi3.load(tiny_phi3, backend="llamacpp", device="CPU", precision="int4") as loaded:
        yield loaded


def _decodes(model: phi3.Model, **request: Any) -> list[phi3.GenerationResult]:
    base = phi3.GenerationConfig(max_new_tokens=BUDGET, **request)
    configs = [base] + [base.replace(do_sample=True, temperature=1.5, seed=seed) for seed in SEEDS]
    return [model.generate(PROMPT, config) for config in configs]


def test_declared_kinds_and_sampling(model: phi3.Model):
    assert model.structured_output == KINDS == ("json_schema", "json_object", "regex")
    assert model.sampling == ("min_p",)


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_json_schema_answers_validate(model: phi3.Model, name: str):
    schema = BOUNDED[name]
    failures = []
    for result in _decodes(model, json_schema=schema):
        try:
            assert result.finish_reason == "eos", f"finish_reason {result.finish_reason}"
            validate_output(result.text, json.dumps(schema))
        except Exception as exc:  # collect every seed's failure, not just the first
            failures.append(f"{result.text!r}: {exc}")
    assert not failures, failures


def test_number_bounds_are_enforced_across_many_samples(model: phi3.Model):
    # the bound llama-cpp-python's own JSON-Schema-to-GBNF converter drops: every value lands in 3..7
    schema = BOUNDED["integer_bounds"]
    values = set()
    for seed in range(12):
        result = model.generate(
            PROMPT, max_new_tokens=BUDGET, json_schema=schema, do_sample=True, temperature=3.0, seed=seed
        )
        validate_output(result.text, json.dumps(schema))
        values.add(json.loads(result.text)["n"])
    assert values <= set(range(3, 8)), values


def test_json_is_compact(model: phi3.Model):
    schema = BOUNDED["nested"]
    for result in _decodes(model, json_schema=schema):
        assert result.text == json.dumps(json.loads(result.text), separators=(",", ":")), result.text


def test_a_schema_llguidance_cannot_enforce_is_refused_before_decoding(model: phi3.Model):
    unknown = {"type": "object", "properties": {"a": {"type": "string", "format": "phi3-no-such-format"}}}
    with pytest.raises(phi3.UnsupportedError, match="llguidance"):
        model.generate(PROMPT, max_new_tokens=8, json_schema=unknown)
    # nothing was left half-done: the session still decodes
    assert model.generate(PROMPT, max_new_tokens=3, ignore_eos=True).new_tokens == 3


@pytest.mark.parametrize(
    "pattern",
    [
        PATTERN,
        r"(?:ab)+c",  # a non-capturing group (llama-cpp-python's GBNF converter refused it)
        r"[0-9]+\.[0-9]{2}",  # "\." (llama.cpp's GBNF parser refused it)
        r"\d{3}-[a-z]{2}",  # \d (Unicode digits, as Python's re; \w differs: llguidance counts combining marks)
        rf"^{PATTERN}$",  # redundant anchors
    ],
)
def test_regex_answers_match_the_whole_pattern(model: phi3.Model, pattern: str):
    bare = pattern.removeprefix("^").removesuffix("$")
    for result in _decodes(model, regex=pattern):
        assert result.finish_reason == "eos", result
        assert re.fullmatch(bare, result.text), result.text


def test_ignore_eos_with_a_constraint_is_refused(model: phi3.Model):
    with pytest.raises(phi3.UnsupportedError, match="ignore_eos"):
        model.generate(PROMPT, max_new_tokens=8, json_object=True, ignore_eos=True)


def test_the_mask_runs_before_top_k(model: phi3.Model):
    # top_k=1 keeps one token: if it ran before the mask, that token would usually be one the
    # constraint forbids; after it, top-1 sampling is the constrained greedy decode
    greedy = model.generate(PROMPT, max_new_tokens=40, regex=PATTERN)
    sampled = model.generate(PROMPT, max_new_tokens=40, regex=PATTERN, do_sample=True, top_k=1, seed=7)
    assert re.fullmatch(PATTERN, greedy.text), greedy.text
    assert greedy.finish_reason == "eos"  # EOS was allowed once the pattern was complete
    assert sampled.text == greedy.text


def test_json_strings_carry_no_raw_control_characters(model: phi3.Model):
    results = [
        model.generate(PROMPT, max_new_tokens=96, json_object=True, do_sample=True, temperature=1.5, seed=seed)
        for seed in range(8)
    ]
    for result in results:
        assert not re.search(r"[\x00-\x1f]", result.text), result.text
        if result.finish_reason != "length":
            assert isinstance(json.loads(result.text), dict)


def test_streamed_constrained_output_equals_the_result(model: phi3.Model):
    schema = BOUNDED["defs_and_ref"]
    stream = model.stream(PROMPT, max_new_tokens=BUDGET, json_schema=schema, do_sample=True, seed=3)
    text = "".join(stream)
    assert text == model.generate(PROMPT, max_new_tokens=BUDGET, json_schema=schema, do_sample=True, seed=3).text
    validate_output(text, json.dumps(schema))


TOOL: dict[str, Any] = {
    # short on purpose: the tiny model's context is 512 tokens and phi3's generic tool prompt (Phi-3's
    # template has no tools) with the answer's JSON, written almost a character per token, must fit
    "type": "function",
    "function": {
        "name": "heat",
        "parameters": {
            "type": "object",
            "properties": {"room": {"enum": ["hall", "den"]}, "deg": {"type": "integer", "minimum": 15, "maximum": 25}},
            "required": ["room", "deg"],
            "additionalProperties": False,
        },
    },
}


def test_a_forced_tool_call_has_arguments_valid_against_the_parameters(model: phi3.Model):
    messages = [{"role": "user", "content": "Warmer"}]
    choice = {"type": "function", "function": {"name": "heat"}}
    for seed in (None, 1, 2):
        sampling: dict[str, Any] = {} if seed is None else {"do_sample": True, "temperature": 1.5, "seed": seed}
        result = model.chat(messages, tools=[TOOL], tool_choice=choice, max_new_tokens=160, **sampling)
        assert result.finish_reason == "tool_calls", result
        assert len(result.tool_calls) == 1, result
        (call,) = result.tool_calls
        assert call.name == "heat"
        validate_output(json.dumps(call.arguments), json.dumps(TOOL["function"]["parameters"]))


def test_min_p_applies(model: phi3.Model):
    # min_p keeps the tokens whose probability (after temperature) is at least min_p times the top
    # one's. The random-weight model's distribution is nearly flat, so choose min_p from its own first
    # step: at the widest gap among the top 8 log-probabilities, which keeps exactly the tokens above it
    from phi3_llamacpp.api import prefill_logprobs
    from phi3_llamacpp.generate import encode
    from phi3_llamacpp.session import _runtime

    logprobs = prefill_logprobs(model, encode(_runtime(model.session), PROMPT))[-1].astype(float)
    top = sorted(logprobs, reverse=True)[:9]
    cut = max(range(1, 8), key=lambda i: top[i - 1] - top[i])  # keep top[:cut]
    min_p = math.exp((top[cut - 1] + top[cut]) / 2 - top[0])
    kept = {int(i) for i in (logprobs >= top[0] + math.log(min_p)).nonzero()[0]}
    assert len(kept) == cut

    def first_tokens(p: float) -> set[int]:
        sampled = [
            model.generate(PROMPT, max_new_tokens=1, ignore_eos=True, do_sample=True, min_p=p, seed=seed)
            for seed in range(24)
        ]
        return {result.token_ids[0] for result in sampled}

    assert first_tokens(min_p) <= kept
    assert not first_tokens(0.0) <= kept  # without it, the flat distribution is drawn from widely
