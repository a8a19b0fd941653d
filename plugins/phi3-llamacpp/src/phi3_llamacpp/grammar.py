"""phi3's output constraints on llama.cpp, enforced with llguidance's token masks.

**llguidance** (the grammar engine of ONNX Runtime GenAI's guidance and phi3's transformers path,
:mod:`phi3.integrations.transformers_structured`) compiles the constraint against the GGUF's own
vocabulary (``llguidance.llamacpp.lltokenizer_from_vocab``: llama.cpp's token pieces, and llama.cpp's
own ``llama_tokenize`` for re-tokenizing) and, at every step, says which tokens may come next;
:mod:`phi3_llamacpp.generate` sets every other logit to ``-inf`` in llama.cpp's logits buffer before
the sampler chain runs, so repetition penalty, temperature, top-k/top-p/min-p and the draw only ever
choose among allowed tokens (as llama.cpp's own ``common_sampler`` applies its grammar first).

Declared kinds (:data:`KINDS`): all three.

- ``json_schema``: llguidance's JSON Schema compiler, which enforces what llama-cpp-python 0.3.36's
  JSON-Schema-to-GBNF converter drops (number bounds ``minimum``/``maximum``/``exclusive*``, and
  also string lengths, enums, ``$defs``/``$ref``, recursive models, ``additionalProperties``). A
  keyword it does not implement is an :class:`phi3.UnsupportedError` before decoding, never ignored.
- ``json_object``: the same compiler on ``{"type": "object"}``.
- ``regex``: ``LLMatcher.grammar_from_regex``, matched against the whole output.

JSON is compact (:data:`JSON_OPTIONS`: no whitespace between tokens), so random-weight and small
models cannot spend their budget on spaces and newlines; strings exclude raw control characters.

Costs: building llguidance's tokenizer table reads every token piece (~1 s for a 32k vocabulary),
once per session, at the first constrained request; compiled constraints are kept per session
(:data:`CACHE_SIZE`, least recently used dropped first), so a repeated schema compiles once.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from phi3.errors import UnsupportedError
from phi3.integrations.transformers_structured import JSON_OPTIONS, llguidance_grammar
from phi3.probing import distribution_version, module_available
from phi3.types import CONSTRAINT_KINDS, ConstraintKind, OutputConstraint

LIBRARY = "llguidance"
INSTALL_HINT = "pip install llguidance (a dependency of phi3-llamacpp)"

KINDS: tuple[ConstraintKind, ...] = tuple(CONSTRAINT_KINDS)
"""What phi3-llamacpp enforces when llguidance is installed (see :func:`enforced_kinds`)."""

CACHE_SIZE = 64
"""Compiled constraints kept per session."""


def enforced_kinds() -> tuple[ConstraintKind, ...]:
    """:data:`KINDS` when llguidance is installed, else none (a find_spec probe: imports nothing)."""
    return KINDS if module_available(LIBRARY) else ()


class Guide:
    """One session's llguidance tokenizer table and compiled constraints (thread-safe)."""

    def __init__(self, vocab: Any, eos_ids: Iterable[int]) -> None:
        self._vocab = vocab
        self.eos_ids = tuple(sorted(set(int(i) for i in eos_ids)))
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._compiled: OrderedDict[OutputConstraint, Any] = OrderedDict()

    def matcher(self, constraint: OutputConstraint) -> Any:
        """A fresh ``llguidance.LLMatcher`` in its start state for ``constraint``, or
        :class:`UnsupportedError` (llguidance missing, or it cannot enforce this constraint)."""
        llguidance = _import_library()
        with self._lock:
            template = self._compiled.get(constraint)
            if template is not None:
                self._compiled.move_to_end(constraint)
                return template.deep_copy()
            if self._tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                with warnings.catch_warnings():
                    # it reads each token's attributes with llama_token_get_attr, which
                    # llama-cpp-python 0.3.36 deprecates (one DeprecationWarning per token)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._tokenizer = lltokenizer_from_vocab(self._vocab, eos_token=list(self.eos_ids))
            tokenizer = self._tokenizer
        template = llguidance.LLMatcher(tokenizer, llguidance_grammar(llguidance, constraint), log_level=0)
        if template.is_error():
            version = distribution_version(LIBRARY) or "?"
            raise UnsupportedError(
                f"{constraint.kind} {_short(constraint.spec)} cannot be enforced on phi3-llamacpp: "
                f"{LIBRARY} {version} rejects it ({template.get_error()})",
                hint="use only the JSON Schema features llguidance implements, or simplify the pattern "
                "(no lookaround or backreferences)",
            )
        with self._lock:
            self._compiled[constraint] = template
            while len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        return template.deep_copy()


def _short(spec: str, limit: int = 120) -> str:
    return repr(spec if len(spec) <= limit else spec[:limit] + "...")


def _import_library() -> Any:
    try:
        import llguidance
    except ImportError as exc:
        raise UnsupportedError(
            f"structured output on phi3-llamacpp needs {LIBRARY}, which is not installed ({exc})",
            hint=INSTALL_HINT,
        ) from None
    return llguidance


__all__ = ["CACHE_SIZE", "JSON_OPTIONS", "KINDS", "LIBRARY", "Guide", "enforced_kinds"]
