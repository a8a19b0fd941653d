"""The builder-side layout checks: cheap refusals before any build (no model is built here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import phi3
import pytest
from phi3.testing.variants import VARIANTS

from phi3_dml import builder


def _config(name: str) -> dict[str, Any]:
    fields = VARIANTS[name].config_fields()
    return {k: v for k, v in fields.items() if v is not None}


def test_only_a_window_shorter_than_the_context_binds() -> None:
    assert builder.window_layout(_config("phi3-mini-4k")) == 63
    assert builder.window_layout(_config("phi3-mini-128k")) is None  # 4096 > 2048 positions
    assert builder.window_layout({"sliding_window": None, "max_position_embeddings": 4096}) is None
    assert builder.window_layout({"sliding_window": 2047, "max_position_embeddings": 4096}) == 2047


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("phi3-mini-4k", "sliding window"),
        ("phi3-medium-4k", "grouped-query attention"),
        ("phi3-medium-128k", "grouped-query attention"),
        ("phi4-mini", "grouped-query attention"),
        ("phi3-mini-128k", None),
        ("phi3.5-mini", None),
    ],
)
def test_fp16_cpu_graphs_are_refused_where_the_builder_breaks_them(name: str, refused: str | None) -> None:
    config = _config(name)
    for provider in ("dml", "cuda"):
        builder.check_fp16_cpu_layout("fp16", provider, config)
    builder.check_fp16_cpu_layout("fp32", "cpu", config)
    if refused is None:
        builder.check_fp16_cpu_layout("fp16", "cpu", config)
        return
    with pytest.raises(phi3.PrecisionNotSupportedError, match=refused) as info:
        builder.check_fp16_cpu_layout("fp16", "cpu", config)
    assert "execution_provider=dml" in str(info.value)


def test_fused_rotary_width_is_checked_on_cpu_graphs_only() -> None:
    tiny = _config("phi4-mini")  # 0.75 x 32 = 24 rotary dims -> 12
    with pytest.raises(phi3.PrecisionNotSupportedError, match="multiple of 8"):
        builder.check_fused_rotary("fp32", "cpu", tiny)
    builder.check_fused_rotary("fp16", "dml", tiny)
    builder.check_fused_rotary("int4", "dml", tiny)
    real = {"hidden_size": 3072, "num_attention_heads": 24, "partial_rotary_factor": 0.75}  # Phi-4-mini: 48
    builder.check_fused_rotary("fp32", "cpu", real)
    builder.check_fused_rotary("int4", "cpu", {"hidden_size": 3072, "num_attention_heads": 32})  # Phi-3-mini


def test_staging_falls_back_to_hard_links_where_symlinks_are_not_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows without developer mode refuses symlinks: the staged checkpoint still gets every file."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"weights")
    (source / "sub" / "x.txt").write_text("x")
    config = {"sliding_window": 4, "max_position_embeddings": 16, "num_hidden_layers": 2}
    (source / "config.json").write_text(json.dumps(config))

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    staged = builder._staged_source(source, config, scratch)
    assert staged != source
    assert (staged / "model.safetensors").read_bytes() == b"weights"
    assert (staged / "sub" / "x.txt").read_text() == "x"
    assert json.loads((staged / "config.json").read_text())["layer_types"] == ["sliding_attention"] * 2
    assert builder._staged_source(source, {**config, "sliding_window": 32}, scratch) == source  # never binds
