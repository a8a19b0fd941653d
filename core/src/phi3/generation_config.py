"""One generation config for every backend, validated before any backend runs.

Backends map these fields onto their own option names (OpenVINO GenAI's ``GenerationConfig``,
ONNX Runtime GenAI's search options, transformers' ``generate`` kwargs). phi3 itself enforces
``stop`` strings and ``max_new_tokens`` on the stream, so a backend that lacks them natively still
behaves the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from phi3 import structured_output
from phi3.errors import ConfigError
from phi3.types import OutputConstraint

INT32_LIMIT = 2**31
"""Runtimes (OpenVINO GenAI, ONNX Runtime GenAI) keep token counts and top_k in 32-bit ints."""
MAX_TEMPERATURE = 100.0
MIN_SAMPLING_TEMPERATURE = 1e-3
"""Below this, logits / temperature overflows float32 in the runtimes (1e4 * 1e-3 is fine, 1e-40 is not)."""
MAX_REPETITION_PENALTY = 100.0
FLOAT32_MIN = 1.1754943508222875e-38
"""The smallest normal float32. Runtimes keep top_p and repetition_penalty in float32, where a smaller
positive value is 0 or a denormal: 1e-300 reached them as 0 and failed in each vendor's own words
(the bad-input corpus), while values from here up decode (test_generation_config.py)."""


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. Greedy by default, so results are reproducible.

    What each field means, precisely enough that two backends agree (the conformance suite checks
    the parts that can be checked across runtimes; backends map them onto their runtime's options):

    ``max_new_tokens``
        The most tokens generated. Generation also ends at an end-of-sequence token (unless
        ``ignore_eos``), at a stop string, or when the context is full (``finish_reason="length"``).
    ``do_sample``
        ``False``: greedy decoding (argmax at every step); temperature, top_k, top_p and seed are
        ignored. ``True``: sample from the distribution below.
    ``repetition_penalty``
        Applied first, to the logits of every token id that occurs in the prompt *or* the output so
        far (transformers' rule, the window is the whole sequence): a positive logit is divided by
        it, a negative one multiplied. ``1.0`` disables it. It applies to greedy decoding too.
    ``temperature``, ``top_k``, ``top_p``
        Then, when sampling, in this order: logits divided by ``temperature``; only the ``top_k``
        most likely tokens kept (``0`` keeps all; ``1`` is greedy); of those, the smallest set whose
        probabilities (renormalised) reach ``top_p`` kept (``1.0`` keeps all); then one is drawn.
    ``min_p``
        When sampling, after temperature: tokens whose probability is below ``min_p`` times the most
        likely token's are dropped (``0.0`` disables it; llama.cpp's and transformers' rule). Optional
        for backends: only those whose runtime has it declare it (``BackendInfo.sampling``), and a
        config with ``min_p > 0`` is refused elsewhere (:class:`phi3.errors.UnsupportedError`).
    ``seed``
        Seeds the draw of this one request. Same seed + same backend, engine, device and artifact +
        same config and prompt = same tokens. Across backends (different runtimes and kernels) the
        same seed need not give the same text. ``None``: a fresh random seed per request.
    ``stop``
        Strings matched on the *decoded text* (by phi3, not the runtime), across token boundaries.
        The result ends just before the first match; the stop string itself is not returned.
    ``ignore_eos``
        Keep decoding past end-of-sequence tokens (benchmarks use it so every run decodes the same
        number of tokens).
    ``json_schema``, ``json_object``, ``regex`` (structured output; at most one)
        Constrain decoding so the output matches: a JSON Schema (a dict, or its JSON text), any
        JSON object, or a regular expression matched against the whole output. The backend masks
        every token with a grammar (the output parses and validates unless ``max_new_tokens`` cuts
        it short: ``finish_reason="length"``). A backend that cannot enforce the kind asked for is
        refused with :class:`phi3.errors.UnsupportedError` before decoding starts (which backends
        can: ``BackendInfo.structured_output``). Backends read :attr:`output_constraint`.
    ``adapter``
        The name of the LoRA adapter (loaded with ``phi3.load(..., adapters=...)``) this one
        generation uses; ``None`` is the base model. phi3 refuses a name the model has not loaded
        (:class:`phi3.errors.AdapterError`) before the backend runs; a backend applies exactly this
        adapter to this generation and nothing of the previous one's.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    do_sample: bool = False
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    json_schema: str | None = None
    json_object: bool = False
    regex: str | None = None
    adapter: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.json_schema, Mapping):
            # kept as JSON text: the config stays hashable and every vendor API takes text
            object.__setattr__(self, "json_schema", structured_output.schema_text(self.json_schema))
        if self.stop is None:
            object.__setattr__(self, "stop", ())  # None means "no stop strings", as everywhere else
        elif isinstance(self.stop, str):
            # A bare string would otherwise be iterated character by character.
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, Iterable) and not isinstance(self.stop, (bytes, Mapping)):
            object.__setattr__(self, "stop", tuple(self.stop))
        else:
            raise ConfigError(f"stop must be a string or a list of strings, got {self.stop!r}")
        _validate(self)

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with ``changes`` applied (and validated); ``None`` clears an optional field
        such as ``seed``. Unknown names are a ConfigError."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_options(cls, base: GenerationConfig | None = None, **options: Any) -> GenerationConfig:
        """Build from keyword options, ignoring ``None`` values (unset CLI flags)."""
        _check_names(options)
        values = dataclasses.asdict(base) if base is not None else {}
        values.update({k: v for k, v in options.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop"] = list(self.stop)
        return data

    @property
    def output_constraint(self) -> OutputConstraint | None:
        """The structured-output request as a backend enforces it, or ``None`` for free text."""
        if self.json_schema is not None:
            return OutputConstraint("json_schema", structured_output.for_grammar(self.json_schema))
        if self.json_object:
            return OutputConstraint("json_object", structured_output.JSON_OBJECT_SCHEMA)
        if self.regex is not None:
            return OutputConstraint("regex", self.regex)
        return None


def _check_names(options: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(GenerationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown generation option(s): {', '.join(unknown)}",
            hint=f"valid options are {', '.join(sorted(known))}",
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _validate(config: GenerationConfig) -> None:
    problems: list[str] = []
    if not _is_int(config.max_new_tokens) or not 1 <= config.max_new_tokens < INT32_LIMIT:
        problems.append(f"max_new_tokens must be a whole number in [1, 2**31), got {config.max_new_tokens!r}")
    if not _is_number(config.temperature) or config.temperature < 0 or config.temperature > MAX_TEMPERATURE:
        problems.append(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}], got {config.temperature!r}")
    elif config.do_sample and config.temperature == 0:
        problems.append("temperature 0 with do_sample=True is undefined; use do_sample=False for greedy")
    elif config.do_sample and config.temperature < MIN_SAMPLING_TEMPERATURE:
        problems.append(
            f"temperature {config.temperature!r} is below {MIN_SAMPLING_TEMPERATURE:g}: runtimes divide float32 "
            "logits by it and overflow; use do_sample=False for greedy decoding"
        )
    if not _is_number(config.top_p) or not FLOAT32_MIN <= config.top_p <= 1:
        problems.append(f"top_p must be in [{FLOAT32_MIN:.4g}, 1] (float32's range), got {config.top_p!r}")
    if not _is_number(config.min_p) or not 0 <= config.min_p < 1:
        problems.append(f"min_p must be a number in [0, 1) (0 disables it), got {config.min_p!r}")
    if not _is_int(config.top_k) or not 0 <= config.top_k < INT32_LIMIT:
        problems.append(f"top_k must be a whole number in [0, 2**31) (0 disables it), got {config.top_k!r}")
    if not isinstance(config.do_sample, bool):
        problems.append(f"do_sample must be true or false, got {config.do_sample!r}")
    if config.seed is not None and (not _is_int(config.seed) or not 0 <= config.seed < 2**32):
        problems.append(f"seed must be a whole number in [0, 2**32), got {config.seed!r}")
    if not all(isinstance(s, str) and s for s in config.stop):
        problems.append(f"stop must be non-empty strings, got {list(config.stop)!r}")
    if (
        not _is_number(config.repetition_penalty)
        or not FLOAT32_MIN <= config.repetition_penalty <= MAX_REPETITION_PENALTY
    ):
        problems.append(
            f"repetition_penalty must be a number in [{FLOAT32_MIN:.4g}, {MAX_REPETITION_PENALTY:g}] (float32's "
            f"range), got {config.repetition_penalty!r}"
        )
    if not isinstance(config.ignore_eos, bool):
        problems.append(f"ignore_eos must be true or false, got {config.ignore_eos!r}")
    if config.adapter is not None and (not isinstance(config.adapter, str) or not config.adapter.strip()):
        problems.append(f"adapter must be the name of a loaded adapter or None, got {config.adapter!r}")
    problems.extend(structured_output.problems(config.json_schema, config.json_object, config.regex))
    if problems:
        raise ConfigError("invalid generation config: " + "; ".join(problems))


def coerce_config(
    config: GenerationConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> GenerationConfig:
    """Merge a config (object, mapping or None) with keyword overrides into a validated config."""
    if config is None:
        base = None
    elif isinstance(config, GenerationConfig):
        base = config
    elif isinstance(config, Mapping):
        base = GenerationConfig.from_options(**config)
    else:
        raise ConfigError(f"config must be a GenerationConfig or a mapping, got {type(config).__name__}")
    if not overrides and base is not None:
        return base
    return GenerationConfig.from_options(base, **overrides)


def find_stop(text: str, stops: Iterable[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else -1


__all__ = ["GenerationConfig", "coerce_config", "find_stop"]
