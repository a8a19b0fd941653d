"""phi3.integrations.transformers_structured on real tokenizers, driven by random logits.

Random scores over the whole vocabulary are the harshest decoder there is: every token the mask
lets through is eventually sampled. If the output still parses and validates, the mask (not the
model) made it so. The model-driven checks are the conformance suite's (test_reference_conformance).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3.integrations import transformers_structured as ts
from phi3.testing import structured

pytest.importorskip("llguidance", reason="needs phi3-core[structured] (the nox core session installs it)")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EXTRA_IDS = 37
"""Model heads are often wider than the tokenizer (padded embeddings): those ids must stay masked."""


@pytest.fixture(scope="module")
def phi3_tokenizer(tiny_phi3: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(tiny_phi3)


@pytest.fixture(scope="module")
def phi4_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Phi-4-mini's byte-level BPE (no byte-fallback pieces): the other tokenizer family."""
    from phi3.testing.tiny_model import make_tiny_phi3

    path = make_tiny_phi3(tmp_path_factory.mktemp("models") / "tiny-phi4", variant="phi4-mini")
    return transformers.AutoTokenizer.from_pretrained(path)


def _random_decode(tokenizer: Any, constraint: phi3.OutputConstraint, seed: int, steps: int = 400) -> str:
    eos = tokenizer.eos_token_id
    processor = ts.logits_processor(tokenizer, constraint, eos_token_ids=[eos])
    generator = torch.Generator().manual_seed(seed)
    vocab = len(tokenizer) + EXTRA_IDS
    ids = torch.tensor([[tokenizer.bos_token_id or 0, 5, 6]])
    out: list[int] = []
    for _ in range(steps):
        scores = torch.randn((1, vocab), generator=generator) * 3
        scores[:, -EXTRA_IDS:] = 100.0  # the best scores sit on ids no token has: never picked
        masked = processor(ids, scores)
        token = int(torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator))
        assert token < len(tokenizer), f"picked id {token}, beyond the tokenizer"
        if token == eos:
            return str(tokenizer.decode(out))
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    raise AssertionError(f"no EOS within {steps} steps: {tokenizer.decode(out)!r}")


@pytest.mark.parametrize("which", ["phi3_tokenizer", "phi4_tokenizer"])
@pytest.mark.parametrize("schema_name", sorted(structured.SCHEMAS))
def test_random_logits_under_a_schema_always_validate(request: Any, which: str, schema_name: str) -> None:
    import jsonschema

    tokenizer = request.getfixturevalue(which)
    schema = structured.SCHEMAS[schema_name]
    constraint = phi3.GenerationConfig(json_schema=schema).output_constraint
    assert constraint is not None
    for seed in range(8):
        text = _random_decode(tokenizer, constraint, seed)
        jsonschema.validate(json.loads(text), schema)
        assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False), "not compact"


@pytest.mark.parametrize("which", ["phi3_tokenizer", "phi4_tokenizer"])
def test_random_logits_under_a_regex_always_match(request: Any, which: str) -> None:
    tokenizer = request.getfixturevalue(which)
    for seed in range(8):
        text = _random_decode(tokenizer, phi3.OutputConstraint("regex", structured.REGEX), seed)
        assert re.fullmatch(structured.REGEX, text), text


def test_the_mask_without_a_processor_would_not_have_produced_json(phi3_tokenizer: Any) -> None:
    """The control: the same random decode with no mask never yields a JSON object."""
    generator = torch.Generator().manual_seed(0)
    picks = torch.multinomial(torch.softmax(torch.randn(len(phi3_tokenizer)) * 3, -1), 40, generator=generator)
    text = phi3_tokenizer.decode(picks.tolist())
    with pytest.raises(ValueError):
        json.loads(text)


def test_a_batch_gets_one_matcher_per_row_and_a_finished_row_only_repeats_eos(phi3_tokenizer: Any) -> None:
    eos = phi3_tokenizer.eos_token_id
    processor = ts.logits_processor(phi3_tokenizer, phi3.OutputConstraint("regex", "(yes|no)"), eos_token_ids=[eos])
    ids = torch.tensor([[1], [1]])
    texts: list[list[int]] = [[], []]
    finished_at: list[int | None] = [None, None]
    for step in range(12):
        masked = processor(ids, torch.zeros((2, len(phi3_tokenizer))))
        picks = []
        for row in range(2):
            allowed = torch.isfinite(masked[row]).nonzero().flatten().tolist()
            done = finished_at[row]
            if done is not None and step > done:  # its EOS was consumed: generate() feeds EOS again
                assert allowed == [eos]
            # the rows choose differently (lowest / highest id): each matcher follows its own row
            pick = allowed[0] if row == 0 else allowed[-1]
            if pick == eos and done is None:
                finished_at[row] = step
            elif done is None:
                texts[row].append(pick)
            picks.append(pick)
        ids = torch.cat([ids, torch.tensor([[picks[0]], [picks[1]]])], dim=1)
    assert None not in finished_at
    decoded = {phi3_tokenizer.decode(tokens) for tokens in texts}
    assert decoded == {"yes", "no"}


def test_a_token_outside_the_grammar_is_a_backend_error(phi3_tokenizer: Any) -> None:
    processor = ts.logits_processor(phi3_tokenizer, phi3.OutputConstraint("regex", "yes"))
    vocab = len(phi3_tokenizer)
    processor(torch.tensor([[1]]), torch.zeros((1, vocab)))
    wrong = phi3_tokenizer.encode("no", add_special_tokens=False)[0]
    with pytest.raises(phi3.BackendError, match="left the structured-output grammar"):
        processor(torch.tensor([[1, wrong]]), torch.zeros((1, vocab)))


def test_grammars_are_compiled_once_per_tokenizer_and_constraint(phi3_tokenizer: Any, phi4_tokenizer: Any) -> None:
    ts.clear_cache()
    schema = phi3.OutputConstraint("json_schema", json.dumps(structured.SCHEMAS["flat_required"]))
    regex = phi3.OutputConstraint("regex", structured.REGEX)
    for _ in range(3):
        ts.logits_processor(phi3_tokenizer, schema)
    assert ts.cache_info() == {"tokenizers": 1, "grammars": 1, "hits": 2, "misses": 1}
    ts.logits_processor(phi3_tokenizer, regex)
    ts.logits_processor(phi4_tokenizer, schema)
    ts.logits_processor(phi3_tokenizer, schema, eos_token_ids=[phi3_tokenizer.eos_token_id, 7])  # another EOS set
    assert ts.cache_info() == {"tokenizers": 2, "grammars": 4, "hits": 2, "misses": 4}


def test_a_valid_schema_llguidance_cannot_enforce_is_refused_by_name(phi3_tokenizer: Any) -> None:
    schema = {"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}
    constraint = phi3.GenerationConfig(json_schema=schema).output_constraint  # valid JSON Schema
    assert constraint is not None
    with pytest.raises(phi3.UnsupportedError, match=r"json_schema cannot be enforced: llguidance .*if.*then"):
        ts.logits_processor(phi3_tokenizer, constraint)


def test_without_llguidance_nothing_is_declared_and_building_says_how_to_install(
    phi3_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ts.enforced_kinds() == ("json_schema", "json_object", "regex")
    monkeypatch.setattr(ts, "module_available", lambda name: name != "llguidance")
    assert ts.enforced_kinds() == ()
    monkeypatch.setitem(__import__("sys").modules, "llguidance", None)  # import llguidance now fails
    with pytest.raises(phi3.UnsupportedError, match=re.escape('pip install "phi3-core[structured]"')):
        ts.logits_processor(phi3_tokenizer, phi3.OutputConstraint("regex", "a"))


def test_importing_the_module_imports_no_runtime() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import phi3.integrations.transformers_structured as ts; ts.enforced_kinds(); "
        "print(sorted({'torch', 'transformers', 'llguidance'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
