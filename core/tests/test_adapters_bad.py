"""Bad LoRA adapters: one clear AdapterError, before any slow step, nothing cached, nothing unloaded.

Every bad adapter is made the way users get them (peft's own LoraConfig / IA3Config and
save_pretrained), except the truncated file (a copy cut short) and the hub-id mismatch (peft writes
whatever base_model_name_or_path the base had, here a hub id from a real local Hugging Face cache).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3.adapter_cache import get_or_convert
from phi3.cache import ArtifactCache
from phi3.errors import AdapterError
from phi3.testing.adapters import _load_base, make_lora_adapter
from phi3.testing.fixtures import RunPhi3
from phi3.testing.tiny_model import make_tiny_phi3

PROMPT = "Hello world, this is"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_phi3(tmp_path_factory.mktemp("bad") / "mini", variant="phi3-mini-4k")


@pytest.fixture(scope="module")
def good(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora_adapter(base, tmp_path_factory.mktemp("bad") / "good")


def _peft_adapter(model_dir: Path, out: Path, config: Callable[[Any], Any]) -> Path:
    import peft

    peft.get_peft_model(_load_base(model_dir), config(peft)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def bad(base: Path, good: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (adapter folder, what the error must say)."""
    root = tmp_path_factory.mktemp("bad-adapters")
    other = make_tiny_phi3(root / "other-base")  # hidden 64, not 128
    targets = ["qkv_proj", "o_proj"]
    truncated = root / "truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return {
        "wrong-shapes": (make_lora_adapter(other, root / "wrong-shapes"), "trained on another base"),
        "dora": (
            _peft_adapter(base, root / "dora", lambda p: p.LoraConfig(target_modules=targets, use_dora=True)),
            "DoRA",
        ),
        "ia3": (
            _peft_adapter(
                base,
                root / "ia3",
                lambda p: p.IA3Config(target_modules=["qkv_proj", "down_proj"], feedforward_modules=["down_proj"]),
            ),
            "IA3 adapter; phi3 applies LoRA adapters only",
        ),
        "embed-tokens": (
            _peft_adapter(base, root / "embed", lambda p: p.LoraConfig(target_modules=["embed_tokens", "qkv_proj"])),
            "targets embed_tokens",
        ),
        "lm-head": (
            _peft_adapter(base, root / "head", lambda p: p.LoraConfig(target_modules=["lm_head"])),
            "targets lm_head",
        ),
        "modules-to-save": (
            _peft_adapter(
                base, root / "mts", lambda p: p.LoraConfig(target_modules=targets, modules_to_save=["lm_head"])
            ),
            "modules_to_save",
        ),
        "truncated": (truncated, "is truncated"),
    }


CASES = ["wrong-shapes", "dora", "ia3", "embed-tokens", "lm-head", "modules-to-save", "truncated"]


def _cache_entries(home: Path) -> list[str]:
    return sorted(
        str(p.relative_to(home)) for sub in ("adapters", "artifacts", "tmp") for p in (home / sub).glob("*/*")
    )


@pytest.mark.parametrize("case", CASES)
def test_a_bad_adapter_is_one_error_before_anything_is_built(
    case: str, base: Path, bad: dict[str, tuple[Path, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"  # empty: any artifact or conversion in it after the error was built for nothing
    monkeypatch.setenv("PHI3_HOME", str(home))
    folder, says = bad[case]
    with pytest.raises(AdapterError) as caught:
        phi3.load(base, backend="reference", precision="fp32", adapters={"x": folder})
    assert says in str(caught.value) and "\n" not in str(caught.value) and caught.value.hint
    assert _cache_entries(home) == []


def test_a_failed_load_leaves_the_loaded_model_alone(base: Path, good: Path, bad: dict[str, tuple[Path, str]]) -> None:
    with phi3.load(base, backend="reference", precision="fp32", adapters={"good": good}) as model:
        before = model.generate(PROMPT, max_new_tokens=8, ignore_eos=True, adapter="good").token_ids
        for case in ("dora", "truncated"):
            with pytest.raises(AdapterError):
                phi3.load(base, backend="reference", precision="fp32", adapters={"good": good, "bad": bad[case][0]})
        assert model.generate(PROMPT, max_new_tokens=8, ignore_eos=True, adapter="good").token_ids == before


def test_a_failed_conversion_caches_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "home")

    def convert(folder: Path) -> dict[str, Any]:
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise AdapterError("the runtime refused it")

    with pytest.raises(AdapterError, match="refused"):
        get_or_convert(cache, "reference", "k" * 24, "h" * 64, convert)
    assert not list((tmp_path / "home").glob("adapters/*/*")) and not list((tmp_path / "home").glob("tmp/*"))
    calls: list[Path] = []

    def works(folder: Path) -> dict[str, Any]:
        calls.append(folder)
        (folder / "adapter.bin").write_bytes(b"ok")
        return {"rank": 8}

    first = get_or_convert(cache, "reference", "k" * 24, "h" * 64, works)
    second = get_or_convert(cache, "reference", "k" * 24, "h" * 64, works)
    assert first == second and len(calls) == 1 and first[1]["rank"] == 8
    assert (first[0] / "adapter.bin").read_bytes() == b"ok"


@pytest.mark.parametrize("case", ["dora", "truncated", "wrong-shapes"])
def test_the_cli_prints_one_line_and_exits_non_zero(
    case: str, base: Path, bad: dict[str, tuple[Path, str]], run_phi3: RunPhi3
) -> None:
    folder, says = bad[case]
    done = run_phi3("generate", str(base), PROMPT, "-b", "reference", "-p", "fp32", "--raw", "--adapter", str(folder))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], done.stderr


def test_cli_adapter_names_are_checked(base: Path, good: Path, run_phi3: RunPhi3) -> None:
    twice = run_phi3("generate", str(base), PROMPT, "--raw", "--adapter", f"a={good}", "--adapter", f"a={good}")
    assert twice.returncode == 1 and "two --adapter options are named 'a'" in twice.stderr
    unknown = run_phi3("generate", str(base), PROMPT, "--raw", "--adapter", f"a={good}", "--use-adapter", "b")
    assert unknown.returncode == 1 and "no --adapter is named 'b' (given: a)" in unknown.stderr
    missing = run_phi3(
        "generate", str(base), PROMPT, "--raw", "-b", "reference", "-p", "fp32", "--adapter", "./nowhere"
    )
    assert missing.returncode == 1 and "no such adapter folder ./nowhere" in missing.stderr
    assert "Traceback" not in twice.stderr + unknown.stderr + missing.stderr


def _hub_cache(root: Path, repo: str, files: Path) -> Path:
    """A Hugging Face cache holding ``files`` as ``repo``'s main revision (what `hf download` leaves)."""
    snapshot = root / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(files, snapshot, ignore=shutil.ignore_patterns("phi3-tiny.json"))
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    return root


def test_hub_ids_for_base_and_adapter(base: Path, good: Path, tmp_path: Path, run_phi3: RunPhi3) -> None:
    """A hub adapter is found like a hub model; one trained on another hub model is refused."""
    hub = _hub_cache(tmp_path / "hub", "tiny-org/tiny-phi3", base)
    adapter = tmp_path / "adapter"
    shutil.copytree(good, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "tiny-org/tiny-phi3"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    _hub_cache(hub, "tiny-org/support-lora", adapter)
    config["base_model_name_or_path"] = "microsoft/Phi-3-mini-4k-instruct"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    _hub_cache(hub, "tiny-org/other-lora", adapter)
    env = {"HF_HUB_CACHE": str(hub)}
    args = ("generate", "tiny-org/tiny-phi3", PROMPT, "-b", "reference", "-p", "fp32", "--raw", "-n", "4", "--json")
    ok = run_phi3(*args, "--adapter", "tiny-org/support-lora", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["adapter"] == "support-lora"
    wrong = run_phi3(*args, "--adapter", "tiny-org/other-lora", env=env)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "trained on microsoft/Phi-3-mini-4k-instruct, not on the loaded model tiny-org/tiny-phi3" in wrong.stderr
