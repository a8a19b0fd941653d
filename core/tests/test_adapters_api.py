"""LoRA adapters through phi3.load / Model / the CLI on the reference backend (transformers + peft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import phi3
from phi3.errors import AdapterError
from phi3.testing.adapters import make_lora_adapter, reference_adapter_ids
from phi3.testing.fixtures import RunPhi3
from phi3.testing.reference import encode_prompt, reference_greedy_ids
from phi3.testing.tiny_model import make_tiny_phi3

PROMPT = "Hello world, this is"
N = 10


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi3(tmp_path_factory.mktemp("api") / "mini", variant="phi3-mini-4k")


@pytest.fixture(scope="module")
def loras(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-lora")
    return {"a": make_lora_adapter(base, root / "a", seed=0), "b": make_lora_adapter(base, root / "b", seed=1)}


def _load(base: Path, **adapters: Path) -> phi3.Model:
    return phi3.load(base, backend="reference", precision="fp32", adapters=adapters)


def test_generate_stream_and_chat_use_the_named_adapter(base: Path, loras: dict[str, Path]) -> None:
    ids = encode_prompt(base, PROMPT)
    want_a = reference_adapter_ids(base, loras["a"], ids, N)
    with _load(base, **loras) as model:
        assert model.adapters == ("a", "b")
        stream = model.stream(PROMPT, {"max_new_tokens": N, "ignore_eos": True, "adapter": "a"})
        text = "".join(stream)
        assert list(stream.result.token_ids) == want_a and stream.result.adapter == "a" and text
        messages = [{"role": "user", "content": "Hi"}]
        chats = {name: model.chat(messages, max_new_tokens=N, adapter=name) for name in ("a", None, "b")}
        assert chats["a"].adapter == "a" and chats[None].adapter is None
        assert len({c.token_ids for c in chats.values()}) == 3
        plain = model.generate(PROMPT, max_new_tokens=N, ignore_eos=True)
        assert list(plain.token_ids) == reference_greedy_ids(base, input_ids=ids, max_new_tokens=N)


def test_conversion_is_cached_by_adapter_content(
    base: Path, loras: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PHI3_HOME", str(home))
    _load(base, a=loras["a"]).close()
    converted = sorted((home / "adapters" / "reference").iterdir())
    stamps = [(p / "phi3-adapter.json").stat().st_mtime_ns for p in converted]
    assert len(converted) == 1 and (converted[0] / "adapter_model.safetensors").is_file()
    _load(base, again=loras["a"]).close()  # same content, another name: the same conversion
    assert [(p / "phi3-adapter.json").stat().st_mtime_ns for p in converted] == stamps
    assert sorted((home / "adapters" / "reference").iterdir()) == converted
    _load(base, a=loras["a"], b=loras["b"]).close()
    assert len(list((home / "adapters" / "reference").iterdir())) == 2


def test_a_quantized_artifact_takes_adapters(base: Path, loras: dict[str, Path], tmp_path: Path) -> None:
    artifact = phi3.quantize(base, backend="reference", precision="fp32", output=tmp_path / "art")
    with phi3.load(artifact.path, adapters={"a": loras["a"]}) as model:
        result = model.generate(PROMPT, max_new_tokens=N, ignore_eos=True, adapter="a")
    assert list(result.token_ids) == reference_adapter_ids(base, loras["a"], encode_prompt(base, PROMPT), N)


@pytest.mark.parametrize(
    ("adapters", "says"),
    [
        ("./a", "adapters must map names"),
        ({"bad name": "./a"}, "'bad name' is not a valid adapter name"),
        ({"a": 3}, "adapter 'a': 3 is not a folder or a hub id"),
        ({"a": "/no/such/folder"}, "no such adapter folder /no/such/folder"),
    ],
)
def test_bad_adapter_arguments(base: Path, adapters: object, says: str) -> None:
    with pytest.raises(AdapterError, match=says):
        phi3.load(base, backend="reference", precision="fp32", adapters=adapters)  # type: ignore[arg-type]


def test_cli_generate_uses_the_first_adapter_and_says_so(base: Path, loras: dict[str, Path], run_phi3: RunPhi3) -> None:
    args = ("generate", str(base), PROMPT, "-b", "reference", "-p", "fp32", "--raw", "-n", str(N), "--ignore-eos")
    done = run_phi3(*args, "--adapter", str(loras["b"]), "--adapter", f"x={loras['a']}", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    want = reference_adapter_ids(base, loras["b"], encode_prompt(base, PROMPT), N)
    assert result["adapter"] == "b" and result["token_ids"] == want
    picked = run_phi3(*args, "--adapter", str(loras["b"]), "--adapter", f"x={loras['a']}", "--use-adapter", "x")
    assert picked.returncode == 0 and "adapter x]" in picked.stderr


def test_cli_chat_with_an_adapter(base: Path, loras: dict[str, Path], run_phi3: RunPhi3) -> None:
    done = run_phi3(
        "chat", str(base), "-b", "reference", "-p", "fp32", "-n", "4", "--adapter", f"a={loras['a']}", input="Hi\n"
    )
    assert done.returncode == 0, done.stderr
    assert "adapter a]" in done.stderr


def test_list_backends_shows_the_capability(run_phi3: RunPhi3) -> None:
    listing = run_phi3("list-backends", "--json", env={"PHI3_LOAD_PLUGINS": "reference"})
    reference = next(b for b in json.loads(listing.stdout)["backends"] if b["name"] == "reference")
    assert reference["adapters"] is True and reference["engines"][0]["adapters"] is None
    table = run_phi3("list-backends", env={"PHI3_LOAD_PLUGINS": "reference"}).stdout
    header, row = table.splitlines()[:2]
    assert header.rstrip().endswith("LORA ADAPTERS") and row.rstrip().endswith("yes")
