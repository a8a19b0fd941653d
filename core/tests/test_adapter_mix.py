"""Weighted LoRA mixes: ``adapters={"a": A, "b": B, "ab": {"a": 0.5, "b": 1.0}}`` and ``--adapter ab=a*0.5+b``.

A mix is built by phi3 as one LoRA (A's stacked along the rank, weighted B's side by side) and applied
like any adapter; its answers are checked against peft's own ``add_weighted_adapter(combination_type=
"cat")`` merged in fp32 (:func:`phi3.testing.adapters.reference_mix_ids`), on the reference backend.
Bad mixes are refused with one line before anything is built or cached.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import phi3
from phi3.adapter_loading import check_adapter_specs, parse_mix_text
from phi3.adapters import mix_lora_adapters, read_lora_adapter
from phi3.errors import AdapterError
from phi3.testing.adapters import make_lora_adapter, reference_adapter_ids, reference_mix_ids
from phi3.testing.fixtures import RunPhi3
from phi3.testing.reference import encode_prompt, reference_greedy_ids
from phi3.testing.tiny_model import make_tiny_phi3

PROMPT = "The quick brown fox"
N = 12
MIX = {"a": 0.5, "b": 1.0}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi3(tmp_path_factory.mktemp("mix") / "mini")


@pytest.fixture(scope="module")
def loras(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mix-lora")
    return {
        "a": make_lora_adapter(base, root / "a", seed=0),
        "b": make_lora_adapter(base, root / "b", seed=1, rank=4, targets=("qkv_proj", "down_proj")),
    }


def _config(base: Path) -> dict[str, Any]:
    return json.loads((base / "config.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _ids(model: phi3.Model, adapter: str | None) -> list[int]:
    result = model.generate(PROMPT, max_new_tokens=N, ignore_eos=True, adapter=adapter)
    assert result.adapter == adapter
    return list(result.token_ids)


def test_mix_weights_are_the_weighted_sum_of_the_updates(base: Path, loras: dict[str, Path]) -> None:
    config = _config(base)
    a, b = (read_lora_adapter(name, loras[name], config) for name in ("a", "b"))
    mix = mix_lora_adapters("ab", [(a, 0.5), (b, -2.0)])
    got, wa, wb = mix.weights(), a.weights(), b.weights()
    assert set(got) == set(wa) | set(wb)  # b adapts fewer modules: they get a's update only
    for key, (ma, mb) in got.items():
        want = sum(
            (weight * (parts[key][1] @ parts[key][0]) for parts, weight in ((wa, 0.5), (wb, -2.0)) if key in parts),
            start=np.zeros((mb.shape[0], ma.shape[1]), dtype=np.float32),
        )
        np.testing.assert_allclose(mb @ ma, want, rtol=1e-5, atol=1e-6)
    qkv = "model.layers.0.self_attn.qkv_proj"
    assert got[qkv][0].shape[0] == wa[qkv][0].shape[0] + wb[qkv][0].shape[0]  # the ranks add up
    assert mix.rank == max(m[0].shape[0] for m in got.values()) and mix.target_modules == a.target_modules
    assert [(c.name, w) for c, w in mix.mix] == [("a", 0.5), ("b", -2.0)]
    hashes = {
        mix.content_hash,
        mix_lora_adapters("x", [(a, 0.5), (b, -2.0000001)]).content_hash,
        mix_lora_adapters("x", [(a, 0.5), (b, 2.0)]).content_hash,
        a.content_hash,
    }
    assert len(hashes) == 4 and mix_lora_adapters("other", [(a, 0.5), (b, -2.0)]).content_hash == mix.content_hash


@pytest.mark.parametrize(
    ("text", "mix"),
    [
        ("a*0.7+b*0.3", {"a": 0.7, "b": 0.3}),
        ("a+b", {"a": 1.0, "b": 1.0}),
        (" a * 2 + b*-.5 ", None),  # spaces around '*' are not the syntax
        ("a*2+b*-.5", {"a": 2.0, "b": -0.5}),
        ("tone.v2*1e-1+legal_x", {"tone.v2": 0.1, "legal_x": 1.0}),
        ("a", None),  # a single name is a folder or hub id
        ("owner/repo", None),
        ("./a+b", None),
        ("a*x+b", None),
    ],
)
def test_mix_text(text: str, mix: dict[str, float] | None) -> None:
    got = parse_mix_text(text)
    assert got == (None if mix is None else pytest.approx(mix))


def test_a_mix_answers_as_peft_merges_it(base: Path, loras: dict[str, Path]) -> None:
    ids = encode_prompt(base, PROMPT)
    want = reference_mix_ids(base, [(loras["a"], 0.5), (loras["b"], 1.0)], ids, N)
    others = [reference_adapter_ids(base, loras[n], ids, N) for n in ("a", "b")]
    assert want not in [*others, reference_greedy_ids(base, input_ids=ids, max_new_tokens=N)]
    negative = reference_mix_ids(base, [(loras["a"], 1.0), (loras["b"], -0.5)], ids, N)
    adapters: dict[str, Any] = {**loras, "ab": MIX, "a-b": "a*1.0+b*-0.5"}
    with phi3.load(base, backend="reference", precision="fp32", adapters=adapters) as model:
        assert model.adapters == ("a", "b", "ab", "a-b")
        got = [_ids(model, name) for name in ("ab", "a", None, "a-b", "b", "ab")]
    assert got[0] == got[5] == want and got[3] == negative
    assert [got[1], got[4]] == others


def test_a_mix_is_converted_once_and_by_its_weights(
    base: Path, loras: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PHI3_HOME", str(home))
    converted = home / "adapters" / "reference"
    phi3.load(base, backend="reference", precision="fp32", adapters={**loras, "ab": MIX}).close()
    assert len(list(converted.iterdir())) == 3  # a, b and the mix
    phi3.load(base, backend="reference", precision="fp32", adapters={**loras, "again": "a*0.5+b*1"}).close()
    assert len(list(converted.iterdir())) == 3  # the same mix under another name: cached
    phi3.load(base, backend="reference", precision="fp32", adapters={**loras, "ab": {"a": 0.5, "b": 0.9}}).close()
    assert len(list(converted.iterdir())) == 4


def test_an_existing_path_named_like_a_mix_is_a_path(
    base: Path, loras: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_phi3: RunPhi3
) -> None:
    shutil.copytree(loras["b"], tmp_path / "a+b")
    monkeypatch.chdir(tmp_path)
    assert check_adapter_specs({**loras, "x": "a+b"})["x"] == "a+b"
    want = reference_adapter_ids(base, loras["b"], encode_prompt(base, PROMPT), N)
    args = ("generate", str(base), PROMPT, "-b", "reference", "-p", "fp32", "--raw", "-n", str(N), "--ignore-eos")
    done = run_phi3(
        *args, "--adapter", f"a={loras['a']}", "--adapter", "x=a+b", "--use-adapter", "x", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["token_ids"] == want


def test_cli_mix(base: Path, loras: dict[str, Path], run_phi3: RunPhi3) -> None:
    want = reference_mix_ids(base, [(loras["a"], 0.5), (loras["b"], 1.0)], encode_prompt(base, PROMPT), N)
    args = ("generate", str(base), PROMPT, "-b", "reference", "-p", "fp32", "--raw", "-n", str(N), "--ignore-eos")
    lora_args = ("--adapter", f"a={loras['a']}", "--adapter", f"b={loras['b']}")
    done = run_phi3(*args, *lora_args, "--adapter", "ab=a*0.5+b", "--use-adapter", "ab", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["adapter"] == "ab" and result["token_ids"] == want


BAD_MIXES: list[tuple[object, str]] = [
    ({"c": 1.0}, "mixes 'c', which is not an adapter of this load (plain adapters: a, b)"),
    ("a*0.5+c", "mixes 'c', which is not an adapter of this load"),
    ({}, "is an empty mix"),
    ({"a": "0.5"}, "the weight of 'a' is '0.5', not a finite number"),
    ({"a": True}, "the weight of 'a' is True, not a finite number"),
    ({"a": math.nan}, "the weight of 'a' is nan, not a finite number"),
    ({"a": math.inf, "b": 1.0}, "the weight of 'a' is inf, not a finite number"),
    ("a*1e999+b", "the weight of 'a' is inf, not a finite number"),
    ({"a": 0, "b": 0.0}, "every weight of the mix is 0"),
    ({1: 0.5}, "mixes 1, which is not an adapter name"),
]


@pytest.mark.parametrize(("mix", "says"), BAD_MIXES, ids=[says.split(",")[0] for _, says in BAD_MIXES])
def test_bad_mixes_are_refused_before_anything_is_built(
    base: Path, loras: dict[str, Path], mix: object, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PHI3_HOME", str(home))
    with pytest.raises(AdapterError, match=f"^adapter 'ab'.*{re.escape(says)}") as caught:
        phi3.load(base, backend="reference", precision="fp32", adapters={**loras, "ab": mix})  # type: ignore[dict-item]
    assert caught.value.hint and "\n" not in str(caught.value)
    assert not home.exists() or not any(home.rglob("*.json")), "nothing is built or cached for a refused mix"


def test_a_mix_of_mixes_is_refused(base: Path, loras: dict[str, Path]) -> None:
    adapters: dict[str, Any] = {**loras, "ab": MIX, "abc": {"ab": 1.0, "a": 1.0}}
    with pytest.raises(AdapterError, match="'abc' mixes 'ab', which is itself a mix") as caught:
        phi3.load(base, backend="reference", precision="fp32", adapters=adapters)
    assert caught.value.hint and "components" in caught.value.hint


def test_cli_refuses_bad_mixes_with_one_line(base: Path, loras: dict[str, Path], run_phi3: RunPhi3) -> None:
    args = ("generate", str(base), PROMPT, "-b", "reference", "-p", "fp32", "--raw", "--adapter", f"a={loras['a']}")
    unknown = run_phi3(*args, "--adapter", "ab=a*0.5+c")
    nested = run_phi3(*args, "--adapter", "ab=a+a", "--adapter", "abc=ab*2+a")
    for done, says in (
        (unknown, "--adapter ab=a*0.5+c: no --adapter is named 'c' (given: a), and no folder has that name"),
        (nested, "--adapter abc=ab*2+a: 'ab' is itself a mix"),
    ):
        assert done.returncode == 1 and "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and says in errors[0], done.stderr
