"""A weighted adapter mix over HTTP: ``phi3 serve smoke --adapter a=DIR --adapter b=DIR --adapter ab=a*0.5+b``.

``phi3 serve`` hands its ``--adapter`` values to :func:`phi3.load`, which reads ``a*0.5+b`` as a mix of
the other two (docs/adapters.md, "Weighted mixes"), so ``"model": "smoke:ab"`` answers with the mix.
The answer must be transformers + peft's, fp32, with peft's own ``cat`` mix merged
(:func:`phi3.testing.adapters.reference_mix_ids`), and differ from a's, b's and the base's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

import phi3
from phi3 import smoke
from phi3.testing import reference_backend
from phi3.testing.reference import encode_prompt, reference_greedy_ids

from .harness import ServerProcess

pytest.importorskip("peft", reason="adapters are made and applied with peft (phi3-core[testing])")

from phi3.testing.adapters import reference_adapter_ids, reference_mix_ids

MODEL = "smoke"
PROMPT = "The capital of France is"
TOKENS = 8
MIX = "a*0.5+b"


@pytest.fixture(scope="module")
def server(start_server: Any, adapter_dirs: dict[str, Path]) -> ServerProcess:
    args = [MODEL, "-b", "reference", "-p", "fp32", "--preload"]
    for name, folder in adapter_dirs.items():
        args += ["--adapter", f"{name}={folder}"]
    return start_server([*args, "--adapter", f"ab={MIX}"])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def expected(adapter_dirs: dict[str, Path]) -> dict[str, str]:
    """In-process answers of the mix and of a, their ids checked against transformers + peft merged."""
    base = smoke.checkpoint()
    ids = encode_prompt(base, PROMPT)
    want = {
        "ab": reference_mix_ids(base, [(adapter_dirs["a"], 0.5), (adapter_dirs["b"], 1.0)], ids, TOKENS),
        "a": reference_adapter_ids(base, adapter_dirs["a"], ids, TOKENS),
    }
    others = [reference_adapter_ids(base, adapter_dirs["b"], ids, TOKENS)]
    others.append(reference_greedy_ids(base, input_ids=ids, max_new_tokens=TOKENS))
    assert want["ab"] not in [want["a"], *others], "the test mix answers like a, b or the base"
    phi3.plugins.reset_registry()
    registry = phi3.plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    adapters = {**{name: str(folder) for name, folder in adapter_dirs.items()}, "ab": MIX}
    with phi3.load(MODEL, backend="reference", precision="fp32", adapters=adapters) as model:
        results = {name: model.generate(PROMPT, max_new_tokens=TOKENS, ignore_eos=True, adapter=name) for name in want}
    assert {name: list(result.token_ids) for name, result in results.items()} == want
    return {name: result.text for name, result in results.items()}


def _complete(client: openai.OpenAI, model: str) -> str:
    answer = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=TOKENS, temperature=0, extra_body={"ignore_eos": True}
    )
    return answer.choices[0].text


def test_the_mix_is_served_and_answers_as_peft_merges_it(client: openai.OpenAI, expected: dict[str, str]) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL, f"{MODEL}:a", f"{MODEL}:b", f"{MODEL}:ab"]
    for name in ("ab", "a", "ab"):
        assert _complete(client, f"{MODEL}:{name}") == expected[name], f"request for {MODEL}:{name}"
