"""``smoke``: a toy Phi-3 that ships with phi3-core, trained on a small synthetic corpus.

It is a real ``Phi3ForCausalLM`` checkpoint with Phi-3-mini-4k's layout (4096 positions, a 2047-token
sliding window, no RoPE scaling, as many key/value heads as query heads) and Phi-4-mini's tied
embeddings (the LM head is the embedding, which lets a model this small learn to copy a word from the
prompt), scaled down to about a million parameters, with Phi-3's tokenizer pipeline (BPE with byte fallback), added
tokens and chat template. It was trained by ``scripts/train_smoke.py`` (:mod:`phi3.smoke.train`) on
:mod:`phi3.smoke.corpus`: greetings, "who are you", a few facts (capitals, animals' legs, colours),
one-digit sums, two-turn conversations, JSON answers to "as JSON" requests and tool calls in
phi3's tool format for Phi-3 (:mod:`phi3.tools`), including answering with a tool's result.

It is a toy: it knows only what that corpus holds and answers anything else with a polite
non-answer or nonsense. It exists so demos, ``phi3 chat`` and tests (tool_choice auto, agent loops,
multi-turn, JSON within a budget) see readable, meaningful answers without downloading a model.
The random-weight models that parity tests need are in :mod:`phi3.testing`.

Importing this module is cheap (no torch); the files are package data in ``phi3/smoke/model``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

__all__ = ["FILES", "MODEL_ID", "checkpoint"]

MODEL_ID: Final = "phi3:smoke"
"""The model id phi3 reports for the smoke model (manifests, ``/v1/models`` cards)."""

FILES: Final = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
"""The checkpoint files the package ships."""


def checkpoint() -> Path:
    """The folder holding the shipped checkpoint (inside the installed package).

    Raises:
        FileNotFoundError: the install lacks the files (a broken or stripped install).
    """
    folder = Path(str(resources.files(__name__) / "model"))
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}")
    return folder
