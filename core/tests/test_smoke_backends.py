"""The smoke model still answers readably on every installed accelerator backend, int4 included.

A conformance-style sanity bound, not an accuracy benchmark (that is benchmarks/smoke_accuracy.py):
int4 rounding may change a few answers of a model this small, but a backend whose quantization or
tokenizer handling is broken answers gibberish or the wrong facts, which these checks catch. Rows whose plugin is not
installed are skipped (phi3-core's own session has none; ``nox -s server`` and the integration
session have openvino and dml).
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest

import phi3

QUESTIONS = {
    "Hello!": "Hello! How can I help you today?",
    "What is the capital of France?": "The capital of France is Paris.",
    "What is 2 + 3?": "2 + 3 = 5.",
    "Who are you?": "I am smoke, a tiny Phi-3 model trained on a small synthetic corpus.",
    "What is the capital of Norway?": "The capital of Norway is Oslo.",
    "How many legs does a spider have?": "A spider has 8 legs.",
}
WORD = re.compile(r"[A-Za-z]{2,}")
SUM = re.compile(r"\d+ \+ \d+ = \d+\.")
ROWS = [("openvino", "int4"), ("openvino", "int8"), ("dml", "int4"), ("llamacpp", "int4")]


def _installed(backend: str) -> bool:
    return backend in {ep.name for ep in entry_points(group="phi3")}


@pytest.mark.parametrize(("backend", "precision"), ROWS, ids=[f"{b}-{p}" for b, p in ROWS])
def test_smoke_answers_readably(backend: str, precision: str) -> None:
    if not _installed(backend):
        pytest.skip(f"phi3-{backend} is not installed here")
    model = phi3.load("smoke", backend=backend, precision=precision)  # the best device this backend sees
    try:
        answers = {q: model.chat([{"role": "user", "content": q}], max_new_tokens=48).text.strip() for q in QUESTIONS}
    finally:
        model.close()
    # the expected answer itself (its first sentence for "Who are you?"): int4 may cost the toy a few
    right = [q for q, expected in QUESTIONS.items() if answers[q].startswith(expected)]
    for question, answer in answers.items():
        assert answer.isascii() and answer.isprintable(), (question, answer)
        if SUM.fullmatch(answer):
            continue  # a sum in its form ("2 + 3 = 5.") has no words
        words = WORD.findall(answer)
        assert len(words) >= 2 and sum(len(w) for w in words) >= len(answer.replace(" ", "")) / 2, (question, answer)
    assert len(right) >= len(QUESTIONS) - 2, answers
