"""Structured output for engines that decode with transformers' ``generate()``: a logits processor.

A backend that runs Hugging Face ``generate()`` (phi3's reference backend on PyTorch, optimum-intel's
``OVModelForCausalLM`` in phi3-openvino) enforces :class:`phi3.OutputConstraint` by adding one
processor to ``generate(logits_processor=...)``. The grammar work is done by **llguidance** (the
library inside ONNX Runtime GenAI's guidance support): it compiles the JSON Schema or regex against
the model's own tokenizer and, at every step, says which tokens may come next; the processor sets
every other logit to ``-inf``. Nothing here parses JSON by hand.

Install: ``pip install "phi3-core[structured]"`` (pins llguidance). ``import phi3`` never imports
llguidance, torch or transformers; this module imports them only when a processor is built.

API (stable; plugins use it)::

    from phi3.integrations import transformers_structured as ts

    ts.enforced_kinds()      # ("json_schema", "json_object", "regex") when llguidance is installed,
                             # else (): declare it in BackendInfo/EngineInfo.structured_output.
                             # A find_spec probe: imports nothing, safe in phi3_backend_info.

    # in phi3_generate, before decoding (raises phi3 errors, so refuse before the first token):
    processor = ts.logits_processor(tokenizer, config.output_constraint, eos_token_ids=eos_ids)
    model.generate(ids, logits_processor=LogitsProcessorList([processor]), ...)

- ``tokenizer``: the Hugging Face tokenizer the model decodes with (a "fast" tokenizers-backed one:
  every tokenizer in transformers 5, ``use_fast=True`` in 4.x).
- ``eos_token_ids``: the ids that end generation for this runtime (``generation_config.eos_token_id``);
  once the output is complete only these are allowed, so generation stops right after it. Default:
  ``tokenizer.eos_token_id``.
- The processor is stateful: build one per ``generate()`` call (building is cheap: the compiled
  grammar is cached per tokenizer, constraint and EOS set, see :func:`cache_info`). Each batch row
  gets its own matcher; beam search, which reorders rows, is not supported.
- JSON is compact (no free whitespace between tokens): random-weight and small models otherwise
  spend their whole budget on spaces and newlines.
- Errors: :class:`phi3.UnsupportedError` when llguidance is not installed or cannot enforce a
  (valid) schema, e.g. a keyword it does not implement (never silently ignored: that would be best
  effort); :class:`phi3.BackendError` if decoding ever leaves the grammar (a runtime bug).

Why llguidance rather than XGrammar's ``xgrammar.contrib.hf``: llguidance 1.9.1 is one small wheel
with no dependencies, while xgrammar 0.2.8 requires triton and apache-tvm-ffi on Linux (large, useless
on a CPU-only install). The mask is applied with plain torch ops, not ``llguidance.torch``'s kernel,
which is wrapped in ``torch.compile`` (a C++ toolchain and a compile on first use on CPU).

Other runtimes with their own grammar support (OpenVINO GenAI's ``StructuredOutputConfig``, ONNX
Runtime GenAI's ``set_guidance``) should use it instead: this module is for transformers-style loops.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from phi3.errors import BackendError, UnsupportedError
from phi3.probing import distribution_version, module_available
from phi3.types import CONSTRAINT_KINDS, ConstraintKind, OutputConstraint

LIBRARY = "llguidance"
"""The grammar engine (its distribution and module name)."""

INSTALL_HINT = 'pip install "phi3-core[structured]"'

CACHE_SIZE = 64
"""Compiled grammars kept per tokenizer (least recently used dropped first)."""

JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
"""llguidance JSON compile options: compact JSON (``,`` and ``:`` with no spaces, no newlines)."""


def enforced_kinds() -> tuple[ConstraintKind, ...]:
    """The constraint kinds this module can enforce here: all of them when llguidance, torch and
    transformers are installed, else none. Finds modules without importing them (cheap enough for
    ``phi3_backend_info``)."""
    if all(module_available(name) for name in (LIBRARY, "torch", "transformers")):
        return CONSTRAINT_KINDS
    return ()


def logits_processor(
    tokenizer: Any, constraint: OutputConstraint, *, eos_token_ids: Sequence[int] | None = None
) -> GrammarLogitsProcessor:
    """A fresh processor that masks every step of one ``generate()`` call to ``constraint``.

    Compiles the grammar (or takes it from the cache) now, so a schema llguidance cannot enforce is
    refused with :class:`phi3.UnsupportedError` before decoding starts.
    """
    eos = _eos_ids(tokenizer, eos_token_ids)
    template, vocab_size = _COMPILED.matcher(tokenizer, constraint, eos)
    return GrammarLogitsProcessor(template, vocab_size, eos)


def cache_info() -> dict[str, int]:
    """How many tokenizers and compiled grammars the cache holds, and how often it hit and missed."""
    return _COMPILED.info()


def clear_cache() -> None:
    """Drop every cached tokenizer table and grammar (tests; freeing memory)."""
    _COMPILED.clear()


class GrammarLogitsProcessor:
    """A transformers logits processor (``__call__(input_ids, scores) -> scores``) that sets the
    score of every token the grammar does not allow next to ``-inf``.

    Usable anywhere transformers takes a ``LogitsProcessorList``. It advances its matchers with the
    tokens ``generate()`` appended since the previous call, so it must see every step of exactly one
    generation, from the first. A row that already finished (its EOS consumed) may only repeat EOS.
    """

    def __init__(self, template: Any, vocab_size: int, eos_token_ids: tuple[int, ...]) -> None:
        self._template = template
        self._mask_words = (vocab_size + 31) // 32
        self._eos = eos_token_ids
        self._matchers: list[Any] = []
        self._seen = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        batch, length = int(input_ids.shape[0]), int(input_ids.shape[1])
        if not self._matchers:
            self._matchers = [self._template.deep_copy() for _ in range(batch)]
        elif batch != len(self._matchers):
            raise BackendError(
                f"the structured-output processor saw {batch} rows after {len(self._matchers)}; "
                "build one processor per generate() call (beam search is not supported)"
            )
        else:
            new = input_ids[:, self._seen :].tolist()
            for row, tokens in enumerate(new):
                self._advance(self._matchers[row], tokens)
        self._seen = length
        vocab = int(scores.shape[-1])
        words = (vocab + 31) // 32
        bitmask = torch.zeros((batch, words), dtype=torch.int32)
        for row, matcher in enumerate(self._matchers):
            if matcher.is_stopped():
                for token in self._eos:
                    if token < vocab:
                        bitmask[row, token // 32] |= _bit(token % 32)
                continue
            # llguidance writes one bit per tokenizer id; a model head wider than the tokenizer
            # (padded embeddings) keeps zeros, i.e. forbidden, for the ids no token has.
            if self._mask_words > words:
                raise BackendError(
                    f"the model scores {vocab} tokens but its tokenizer has more; structured output "
                    "needs the tokenizer the model was built with"
                )
            matcher.unsafe_compute_mask_ptr(bitmask[row].data_ptr(), self._mask_words * 4)
        shifts = torch.arange(32, dtype=torch.int32)
        allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).bool().reshape(batch, words * 32)[:, :vocab]
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))

    def _advance(self, matcher: Any, tokens: list[int]) -> None:
        for token in tokens:
            if matcher.is_stopped():
                return  # finished rows are padded or (ignore_eos) repeat EOS: nothing to check
            if not matcher.consume_token(int(token)):
                raise BackendError(
                    f"decoding left the structured-output grammar at token {token}: {matcher.get_error()}",
                    hint="this is a bug in the backend's logits processing; please report it",
                )


def _bit(index: int) -> int:
    """An int32 word with bit ``index`` set (bit 31 is the sign bit)."""
    return -(2**31) if index == 31 else 1 << index


def _eos_ids(tokenizer: Any, eos_token_ids: Sequence[int] | None) -> tuple[int, ...]:
    if eos_token_ids is None:
        eos = getattr(tokenizer, "eos_token_id", None)
        eos_token_ids = [] if eos is None else [eos]
    ids = tuple(dict.fromkeys(int(token) for token in eos_token_ids))
    if not ids:
        raise UnsupportedError(
            "structured output needs an end-of-sequence token to stop at, and this tokenizer has none",
            hint="pass eos_token_ids= (the ids generate() stops on)",
        )
    return ids


def _import_library() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:
        raise UnsupportedError(
            f"structured output with transformers needs {LIBRARY}, which is not installed ({exc})",
            hint=INSTALL_HINT,
        ) from None
    return llguidance


def llguidance_grammar(llguidance: Any, constraint: OutputConstraint) -> str:
    """The llguidance grammar for ``constraint`` (compact JSON, :data:`JSON_OPTIONS`), for any runtime
    that drives llguidance itself (phi3-llamacpp masks llama.cpp's logits with it). ``llguidance`` is the
    imported module; UnsupportedError for a schema it cannot enforce."""
    if constraint.kind in ("json_schema", "json_object"):
        try:
            return str(llguidance.LLMatcher.grammar_from_json_schema(constraint.spec, defaults=JSON_OPTIONS))
        except ValueError as exc:
            raise UnsupportedError(
                f"{LIBRARY} cannot read this {constraint.kind}: {exc}", hint="check the schema"
            ) from None
    if constraint.kind == "regex":
        return str(llguidance.LLMatcher.grammar_from_regex(constraint.spec))
    raise UnsupportedError(f"unknown structured-output kind {constraint.kind!r}", hint="update phi3-core")


class _Entry:
    """One tokenizer's llguidance tables (per EOS set) and its compiled grammars."""

    def __init__(self) -> None:
        self.tables: dict[tuple[int, ...], Any] = {}
        self.grammars: OrderedDict[tuple[OutputConstraint, tuple[int, ...]], tuple[Any, int]] = OrderedDict()


class _Cache:
    """Compiled grammars per (tokenizer, constraint, EOS set); tokenizers are held weakly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[Any, _Entry] = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    def matcher(self, tokenizer: Any, constraint: OutputConstraint, eos: tuple[int, ...]) -> tuple[Any, int]:
        """A compiled matcher in its start state (copy it before use) and the tokenizer's size."""
        llguidance = _import_library()
        key = (constraint, eos)
        with self._lock:
            entry = self._entries.get(tokenizer)
            if entry is None:
                entry = self._entries[tokenizer] = _Entry()
            cached = entry.grammars.get(key)
            if cached is not None:
                entry.grammars.move_to_end(key)
                self.hits += 1
                return cached
            self.misses += 1
            table = entry.tables.get(eos)
            if table is None:
                table = entry.tables[eos] = _table(llguidance, tokenizer, eos)
        template = llguidance.LLMatcher(table, llguidance_grammar(llguidance, constraint), log_level=0)
        if template.is_error():
            version = distribution_version(LIBRARY) or "?"
            raise UnsupportedError(
                f"{constraint.kind} cannot be enforced: {LIBRARY} {version} rejects it ({template.get_error()})",
                hint="use only the JSON Schema features llguidance implements, or simplify the pattern",
            )
        compiled = (template, int(table.vocab_size))
        with self._lock:
            entry.grammars[key] = compiled
            while len(entry.grammars) > CACHE_SIZE:
                entry.grammars.popitem(last=False)
        return compiled

    def info(self) -> dict[str, int]:
        with self._lock:
            grammars = sum(len(entry.grammars) for entry in self._entries.values())
            return {"tokenizers": len(self._entries), "grammars": grammars, "hits": self.hits, "misses": self.misses}

    def clear(self) -> None:
        with self._lock:
            self._entries = weakref.WeakKeyDictionary()
            self.hits = self.misses = 0


def _table(llguidance: Any, tokenizer: Any, eos: tuple[int, ...]) -> Any:
    try:
        return llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos))
    except ValueError as exc:  # a slow (Python) tokenizer: llguidance reads tokenizers' JSON
        raise UnsupportedError(
            f"{LIBRARY} cannot read this tokenizer ({type(tokenizer).__name__}: {exc})",
            hint="load the tokenizer with use_fast=True",
        ) from None


_COMPILED = _Cache()

__all__ = [
    "CACHE_SIZE",
    "INSTALL_HINT",
    "JSON_OPTIONS",
    "LIBRARY",
    "GrammarLogitsProcessor",
    "cache_info",
    "clear_cache",
    "enforced_kinds",
    "llguidance_grammar",
    "logits_processor",
]
