"""Tiny layouts of every Phi-3 family checkpoint phi3's catalogue names, and the mistakes they catch.

A backend that is exact on one config shape can still be wrong on the family: Phi-3-mini-4k has a
sliding window, the 128k models and Phi-3.5/Phi-4-mini switch RoPE tables at
``original_max_position_embeddings`` (LongRoPE, with an attention scale), Phi-3-medium uses GQA
with head_dim 128 and Phi-4-mini rotates only 75 % of each head, ties its embeddings and uses a
GPT-2-style byte-level tokenizer without BOS. Each :class:`TinyVariant` keeps the real config's
layout and ratios but shrinks the lengths, so that a test prompt crosses the window and the
LongRoPE switch within a few dozen tokens. The dims never let a projection's width equal the
vocabulary size (ONNX Runtime GenAI's builder picks "the Linear whose width is vocab_size" as the
LM head).

:data:`MISTAKES` are config edits that model the bugs a backend can make (wrong RoPE base, LongRoPE
factors swapped or not switched, attention scale dropped, window ignored, partial rotary ignored);
:func:`write_mistaken_copy` writes a checkpoint that computes with such a mistake, so tests can
show that the reference ids tell the right computation from the wrong one.

Nothing here imports torch.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MISTAKES",
    "VARIANTS",
    "TinyVariant",
    "applicable_mistakes",
    "variant",
    "write_mistaken_copy",
]


def _ramp(n: int, start: float, stop: float, power: float) -> list[float]:
    """``n`` factors rising from ``start`` to ``stop`` along ``t**power`` (LongRoPE's tables rise with the dim)."""
    if n == 1:
        return [float(start)]
    return [round(start + (stop - start) * (i / (n - 1)) ** power, 6) for i in range(n)]


@dataclass(frozen=True)
class TinyVariant:
    """The tiny stand-in for one catalogue checkpoint (alias = :data:`phi3.catalogue.CATALOGUE` key).

    ``longrope`` builds ``rope_scaling`` with short/long factor tables of ``rotary_dim / 2`` entries;
    ``sliding_window`` None means no window. ``tokenizer`` is ``"llama"`` (SentencePiece-style BPE with
    byte fallback and BOS, Phi-3) or ``"phi4"`` (GPT-2 byte-level BPE, no BOS, Phi-4-mini).
    """

    name: str
    real: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    original_max_position_embeddings: int
    sliding_window: int | None
    longrope: bool
    partial_rotary_factor: float = 1.0
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    tokenizer: str = "llama"
    num_hidden_layers: int = 2
    factor_shape: tuple[float, float, float] = field(default=(12.0, 1.5, 0.3))
    """(top of the long table, its curve power, rise of the short table above 1)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def rope_scaling(self) -> dict[str, Any] | None:
        """The ``rope_scaling`` entry of config.json, laid out as in the real 128k checkpoints."""
        if not self.longrope:
            return None
        top, power, rise = self.factor_shape
        n = self.rotary_dim // 2
        return {
            "type": "longrope",
            "short_factor": _ramp(n, 1.0, 1.0 + rise, 2.0),
            "long_factor": _ramp(n, 1.0, top, power),
        }

    def config_fields(self) -> dict[str, Any]:
        """The Phi3Config keyword arguments this layout fixes (tokens ids are added by the builder)."""
        fields: dict[str, Any] = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "original_max_position_embeddings": self.original_max_position_embeddings,
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
        }
        scaling = self.rope_scaling()
        if scaling is not None:
            fields["rope_scaling"] = scaling
        return fields


# Real layouts (config.json of the microsoft/* checkpoints) -> tiny ones:
# - 4k models: max_position 4096, sliding_window 2047 (= max/2 - 1), no rope_scaling -> 128 / 63.
# - 128k models: LongRoPE, original 4096 -> max 131072 (x32); their sliding_window (262144 or 131072)
#   never binds but is in the config, so it is kept (x2 the max) -> original 64, max 2048, window 4096.
# - Phi-3-mini / 3.5-mini: 32 heads of 96, MHA -> 4 heads of 32. Phi-3-medium: 40 heads of 128, 10 KV
#   heads -> 4 heads of 128, 1 KV head (same 4:1 grouping, same head_dim). Phi-4-mini: 24 heads of
#   128, 8 KV heads, partial_rotary_factor 0.75, tied embeddings, vocab 200064 -> 6 heads of 32, 2 KV.
# Vocab sizes are chosen so no projection width (hidden, q+k+v, intermediate, 2 x intermediate)
# equals them: tiny Phi-4-mini's FFN (8/3 x 192 = 512) would collide with a 512 vocabulary.
_MINI: dict[str, Any] = {"vocab_size": 544, "hidden_size": 128, "intermediate_size": 320, "num_attention_heads": 4}
_MEDIUM: dict[str, Any] = {"vocab_size": 576, "hidden_size": 512, "intermediate_size": 896, "num_attention_heads": 4}
_LONG: dict[str, Any] = {
    "max_position_embeddings": 2048,
    "original_max_position_embeddings": 64,
    "sliding_window": 4096,
}
_SHORT: dict[str, Any] = {"max_position_embeddings": 128, "original_max_position_embeddings": 128, "sliding_window": 63}

VARIANTS: Final[Mapping[str, TinyVariant]] = {
    v.name: v
    for v in (
        TinyVariant(
            "phi3-mini-4k", "microsoft/Phi-3-mini-4k-instruct", **_MINI, num_key_value_heads=4, **_SHORT, longrope=False
        ),
        TinyVariant(
            "phi3-mini-128k",
            "microsoft/Phi-3-mini-128k-instruct",
            **_MINI,
            num_key_value_heads=4,
            **_LONG,
            longrope=True,
        ),
        TinyVariant(
            "phi3-medium-4k",
            "microsoft/Phi-3-medium-4k-instruct",
            **_MEDIUM,
            num_key_value_heads=1,
            **_SHORT,
            longrope=False,
        ),
        TinyVariant(
            "phi3-medium-128k",
            "microsoft/Phi-3-medium-128k-instruct",
            **_MEDIUM,
            num_key_value_heads=1,
            **_LONG,
            longrope=True,
        ),
        TinyVariant(
            "phi3.5-mini",
            "microsoft/Phi-3.5-mini-instruct",
            **_MINI,
            num_key_value_heads=4,
            **_LONG,
            longrope=True,
            factor_shape=(20.0, 1.2, 0.5),
        ),
        TinyVariant(
            "phi4-mini",
            "microsoft/Phi-4-mini-instruct",
            vocab_size=576,
            hidden_size=192,
            intermediate_size=512,
            num_attention_heads=6,
            num_key_value_heads=2,
            **_LONG,
            longrope=True,
            partial_rotary_factor=0.75,
            tie_word_embeddings=True,
            tokenizer="phi4",
        ),
    )
}
"""Every catalogue entry's tiny layout, keyed by its catalogue alias."""


def variant(name: str) -> TinyVariant:
    """The variant called ``name`` (a catalogue alias), or a ValueError listing the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown tiny Phi-3 variant {name!r}; known: {', '.join(VARIANTS)}") from None


# --------------------------------------------------------------------------------------------------
# modelled mistakes


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """The config's rope dict (transformers 5 writes ``rope_parameters``, older ``rope_scaling``)."""
    found = config.get("rope_parameters") or config.get("rope_scaling")
    return found if isinstance(found, dict) else {}


def _is_longrope(config: dict[str, Any]) -> bool:
    return _rope(config).get("rope_type", _rope(config).get("type")) == "longrope"


def _wrong_theta(config: dict[str, Any]) -> dict[str, Any] | None:
    rope = _rope(config)
    rope["rope_theta"] = float(rope.get("rope_theta", config.get("rope_theta", 10000.0))) * 10
    config["rope_theta"] = rope["rope_theta"]
    return config


def _swapped_factors(config: dict[str, Any]) -> dict[str, Any] | None:
    if not _is_longrope(config):
        return None
    rope = _rope(config)
    rope["short_factor"], rope["long_factor"] = rope["long_factor"], rope["short_factor"]
    return config


def _never_switches(config: dict[str, Any]) -> dict[str, Any] | None:
    """Short factors at every position: a backend that builds one RoPE table and never switches."""
    if not _is_longrope(config):
        return None
    rope = _rope(config)
    rope["long_factor"] = list(rope["short_factor"])
    return config


def _no_attention_scale(config: dict[str, Any]) -> dict[str, Any] | None:
    """LongRoPE's mscale (sqrt(1 + ln(max/original) / ln(original))) left out of cos/sin."""
    if not _is_longrope(config):
        return None
    _rope(config)["attention_factor"] = 1.0
    return config


def _no_window(config: dict[str, Any]) -> dict[str, Any] | None:
    window = config.get("sliding_window")
    if window is None or window >= config["max_position_embeddings"]:
        return None
    config["sliding_window"] = None
    return config


def _full_rotary(config: dict[str, Any]) -> dict[str, Any] | None:
    """Every head dim rotated (the LongRoPE tables padded with their last entry to match)."""
    rope = _rope(config)
    partial = rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial >= 1.0:
        return None
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    rope["partial_rotary_factor"] = 1.0
    config["partial_rotary_factor"] = 1.0
    for key in ("short_factor", "long_factor"):
        if key in rope:
            table = list(rope[key])
            rope[key] = table + [table[-1]] * (head_dim // 2 - len(table))
    return config


MISTAKES: Final[Mapping[str, Callable[[dict[str, Any]], dict[str, Any] | None]]] = {
    "rope_theta_x10": _wrong_theta,
    "longrope_factors_swapped": _swapped_factors,
    "longrope_never_switches": _never_switches,
    "longrope_no_attention_scale": _no_attention_scale,
    "sliding_window_ignored": _no_window,
    "partial_rotary_ignored": _full_rotary,
}
"""Config edits that model a backend bug; each returns None where the layout has nothing to get wrong."""


def applicable_mistakes(config: Mapping[str, Any]) -> list[str]:
    """Names of the :data:`MISTAKES` that change something in this config.json content."""
    return [name for name, edit in MISTAKES.items() if edit(copy.deepcopy(dict(config))) is not None]


def write_mistaken_copy(model_dir: str | os.PathLike[str], mistake: str, dest: str | os.PathLike[str]) -> pathlib.Path:
    """A checkpoint at ``dest`` that shares ``model_dir``'s weights but computes with ``mistake``.

    Weights and tokenizer files are symlinked; only config.json is rewritten.

    Raises:
        ValueError: ``mistake`` is unknown or changes nothing for this layout.
    """
    source, target = pathlib.Path(model_dir).resolve(), pathlib.Path(dest)
    if mistake not in MISTAKES:
        raise ValueError(f"unknown mistake {mistake!r}; known: {', '.join(MISTAKES)}")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    edited = MISTAKES[mistake](copy.deepcopy(config))
    if edited is None:
        raise ValueError(f"mistake {mistake!r} does not apply to {source}")
    target.mkdir(parents=True, exist_ok=False)
    for file in source.iterdir():
        if file.is_file() and file.name != "config.json":
            (target / file.name).symlink_to(file)
    (target / "config.json").write_text(json.dumps(edited, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
