"""A checkpoint that cannot make a working artifact is refused before quantizing, and nothing is cached.

Before this check, a folder without ``tokenizer.json`` or with a layer's weights missing built and
cached an artifact that answered ``<unk><unk>...`` or ran random weights.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from _sandbox import Sandbox, one_line_error

from phi3.checkpoint import check_checkpoint, expected_tensors
from phi3.errors import ModelNotFoundError

pytestmark = pytest.mark.usefixtures("reference_installed")


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


def _rewrite_weights(model: Path, change: Callable[[dict[str, object]], None]) -> None:
    """Rewrite model.safetensors with ``change`` applied to its tensors (safetensors' own API)."""
    from safetensors.torch import load_file, save_file

    path = model / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)  # type: ignore[arg-type]
    save_file(tensors, str(path), metadata={"format": "pt"})


def _edit_config(model: Path, **changes: object) -> None:
    path = model / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _drop_layer(tensors: dict[str, object]) -> None:
    del tensors["model.layers.1.mlp.down_proj.weight"]


def _wrong_shape(tensors: dict[str, object]) -> None:
    import torch

    tensors["model.layers.0.self_attn.o_proj.weight"] = torch.zeros(8, 8)


def _truncate(model: Path) -> None:
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _corrupt_header(model: Path) -> None:
    path = model / "model.safetensors"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[:8] + b"{" * length + data[8 + length :])


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "no tokenizer": (lambda m: (m / "tokenizer.json").unlink(), "has no tokenizer"),
    "corrupt tokenizer": (lambda m: (m / "tokenizer.json").write_text("{not json"), "tokenizer.json"),
    "tokenizer of the wrong shape": (lambda m: (m / "tokenizer.json").write_text("[]"), "tokenizer.json"),
    "tokenizer_config a list": (lambda m: (m / "tokenizer_config.json").write_text("[]"), "tokenizer_config.json"),
    "missing layer": (lambda m: _rewrite_weights(m, _drop_layer), "lacks weights the config needs"),
    "wrong shape": (lambda m: _rewrite_weights(m, _wrong_shape), "has shape [8, 8]"),
    "truncated weights": (_truncate, "is truncated"),
    "corrupt header": (_corrupt_header, "corrupt safetensors header"),
    "no weights": (lambda m: (m / "model.safetensors").unlink(), "has no *.safetensors weights"),
    "config sizes as text": (
        lambda m: (m / "config.json").write_text(
            json.dumps({**json.loads((m / "config.json").read_text()), "hidden_size": "64"})
        ),
        "invalid sizes: hidden_size='64'",
    ),
    "config with nonsense rope_scaling": (
        lambda m: _edit_config(m, rope_scaling={"type": "nonsense", "short_factor": "x"}),
        "rope_scaling {'type': 'nonsense', 'short_factor': 'x'} is not one the Phi-3 family uses",
    ),
    "config with a LongRoPE factor list of text": (
        lambda m: _edit_config(m, rope_scaling={"type": "longrope", "short_factor": "x", "long_factor": [1.0]}),
        "rope_scaling.short_factor must be a list of numbers",
    ),
    "config with architectures as a string": (
        lambda m: _edit_config(m, architectures="Phi3ForCausalLM"),
        "architectures must be a list of names",
    ),
    "config from another model": (
        lambda m: (m / "config.json").write_text(
            json.dumps({**json.loads((m / "config.json").read_text()), "intermediate_size": 96})
        ),
        "come from different models",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_checkpoints_are_refused_and_nothing_is_cached(
    sandbox: Sandbox, tiny_phi3: Path, tmp_path: Path, breakage: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_phi3, model)
    breakage_fn, words = BREAKAGES[breakage]
    breakage_fn(model)
    with pytest.raises(ModelNotFoundError) as info:
        check_checkpoint(model)
    assert words in str(info.value)
    error = one_line_error(sandbox.phi3("quantize", str(model), "-b", "reference", "-p", "fp32"))
    assert words in error
    artifacts = sandbox.home / "artifacts"
    assert not artifacts.exists() or not list(artifacts.glob("*/*")), "a broken checkpoint was cached"


def test_a_checkpoint_without_chat_template_builds_and_says_chat_needs_one(
    sandbox: Sandbox, tiny_phi3: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_phi3, model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert check_checkpoint(model).has_chat_template is False
    done = sandbox.phi3("quantize", str(model), "-b", "reference", "-p", "fp32")
    assert done.returncode == 0, done.stderr
    assert "has no chat template" in done.stderr


def test_the_expected_tensors_match_what_transformers_saves(tiny_phi3: Path) -> None:
    from safetensors import safe_open

    config = json.loads((tiny_phi3 / "config.json").read_text())
    with safe_open(str(tiny_phi3 / "model.safetensors"), "pt") as weights:
        saved = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    assert saved == expected_tensors(config)
    assert check_checkpoint(tiny_phi3).tensors == len(saved)


@pytest.mark.parametrize(
    ("changes", "present"),
    [({"tie_word_embeddings": True}, False), ({"num_key_value_heads": 2}, True)],
)
def test_family_layouts_imply_the_right_tensors(tiny_phi3: Path, changes: dict[str, object], present: bool) -> None:
    """Phi-4-mini ties embeddings (no lm_head); Phi-3-medium and Phi-4-mini use GQA (a smaller qkv)."""
    config = {**json.loads((tiny_phi3 / "config.json").read_text()), **changes}
    shapes = expected_tensors(config)
    assert ("lm_head.weight" in shapes) is present
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config["hidden_size"] // heads
    assert shapes["model.layers.0.self_attn.qkv_proj.weight"][0] == (heads + 2 * kv) * head_dim


def test_chat_on_a_model_without_template_is_one_phi3_error(sandbox: Sandbox, tiny_phi3: Path, tmp_path: Path) -> None:
    """Recorded in the manifest at build time, so every backend answers alike (not transformers' ValueError)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_phi3, model)
    (model / "chat_template.jinja").unlink()
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    error = one_line_error(sandbox.phi3("generate", str(model), "Hi", "-b", "reference", "-p", "fp32", "-n", "2"))
    assert "has no chat template" in error and "--raw" in error
    done = sandbox.phi3("generate", str(model), "Hi", "-b", "reference", "-p", "fp32", "-n", "2", "--raw")
    assert done.returncode == 0, done.stderr
