"""Write configs that old runtimes read: down-level what the newest model builder emits.

Why: a Windows DirectML user can only install onnxruntime-genai-directml 0.13.1 today (0.14+ needs
an onnxruntime-directml that is not published), while artifacts are often built elsewhere with the
newest builder (0.18.0 when this was written). Runtime 0.13.1 refuses such artifacts outright:

- ``genai_config.json``: ``model.decoder.sliding_window.cache_slack`` (written for every model with
  a sliding window, e.g. Phi-3-mini) -> ``Unknown value "cache_slack"``. Its value 0 means "the
  execution provider's default", which is what a runtime without the key does, so dropping it is
  exact.
- ``tokenizer_config.json``: transformers 5 saves ``"tokenizer_class": "TokenizersBackend"``, which
  0.13.1's tokenizer does not know (``Unsupported tokenizer class``). The right class is the one the
  checkpoint itself names (``LlamaTokenizer`` for Phi-3/3.5, ``GPT2Tokenizer`` for Phi-4-mini), or,
  failing that, the one its ``tokenizer.json`` pipeline implies. The class changes tokenization
  (``PreTrainedTokenizerFast`` encodes a Phi-3 prompt differently), so it is never guessed blindly.
- transformers 5 also moves the chat template out of ``tokenizer_config.json`` (into
  ``chat_template.jinja``) and drops ``add_bos_token``; both are restored from the checkpoint so
  every runtime (and :mod:`phi3_dml.session`) finds them where they always were.

Only changes known to be exact are made. Every genai_config key is then checked against the keys
0.13.1 is known to read (:data:`KNOWN_GENAI_KEYS`, all verified by loading under 0.13.1); anything
else stays, and the artifact's manifest then says it needs the builder's own runtime version, so
loading it on an older runtime is a clear :class:`~phi3.errors.ArtifactError` instead of a JSON
parse traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError

OLDEST_RUNTIME = "0.13.1"
"""The oldest onnxruntime-genai the artifacts are written for (the newest DirectML build on PyPI)."""

KNOWN_GENAI_KEYS = frozenset(
    {
        "model.bos_token_id",
        "model.context_length",
        "model.eos_token_id",
        "model.pad_token_id",
        "model.type",
        "model.vocab_size",
        "model.decoder.filename",
        "model.decoder.head_size",
        "model.decoder.hidden_size",
        "model.decoder.num_attention_heads",
        "model.decoder.num_hidden_layers",
        "model.decoder.num_key_value_heads",
        "model.decoder.session_options.log_id",
        "model.decoder.session_options.provider_options",
        "model.decoder.inputs.input_ids",
        "model.decoder.inputs.attention_mask",
        "model.decoder.inputs.position_ids",
        "model.decoder.inputs.past_key_names",
        "model.decoder.inputs.past_value_names",
        "model.decoder.outputs.logits",
        "model.decoder.outputs.present_key_names",
        "model.decoder.outputs.present_value_names",
        "model.decoder.sliding_window.window_size",
        "model.decoder.sliding_window.slide_key_value_cache",
        "model.decoder.sliding_window.slide_inputs",
        "model.decoder.sliding_window.layers",
        "search.diversity_penalty",
        "search.do_sample",
        "search.early_stopping",
        "search.length_penalty",
        "search.max_length",
        "search.min_length",
        "search.no_repeat_ngram_size",
        "search.num_beams",
        "search.num_return_sequences",
        "search.past_present_share_buffer",
        "search.repetition_penalty",
        "search.temperature",
        "search.top_k",
        "search.top_p",
    }
)
"""genai_config.json keys (dotted paths) that onnxruntime-genai 0.13.1 reads: every key builder
0.18.0 writes for Phi-3 on cpu, dml and cuda, minus the ones it rejects. Leaves below
``provider_options`` are free-form provider settings."""

FREE_FORM_STRING_PARENTS = ("model.decoder.session_options",)
"""Sections whose unknown string values every runtime passes through as ORT config entries."""

KNOWN_TOKENIZER_CLASSES = frozenset(
    {"LlamaTokenizer", "LlamaTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "PreTrainedTokenizerFast"}
)
"""tokenizer_class values onnxruntime-genai 0.13.1 loads (checked: the Llama and GPT-2 classes and
PreTrainedTokenizerFast; transformers 5's ``TokenizersBackend`` is refused)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.13.1"`` -> ``(0, 13, 1)``; pre-release/local suffixes are ignored (``"0.14.0rc1"`` -> 0.14.0)."""
    parts = []
    for piece in text.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


@dataclass
class CompatReport:
    """What down-levelling did; goes into the artifact manifest."""

    runtime_min_version: str
    changes: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "runtime_min_version": self.runtime_min_version,
            "compat_changes": list(self.changes),
            "compat_unknown_keys": list(self.unknown_keys),
        }


def _paths(data: Mapping[str, Any], parent: str = "") -> Iterator[tuple[str, str, Any]]:
    """(parent path, dotted path, value) of every leaf; known keys are leaves even if objects."""
    for key, value in data.items():
        path = f"{parent}.{key}" if parent else key
        if isinstance(value, Mapping) and value and path not in KNOWN_GENAI_KEYS:
            yield from _paths(value, path)
        else:
            yield parent, path, value


TOOL_TOKEN_KEYS = ("bot_token_id", "eot_token_id", "bor_token_id", "eor_token_id")
"""``model.*`` keys builder 0.18.0 writes for checkpoints with tool-call tokens (Phi-4-mini's
``<|tool_call|>``/``<|/tool_call|>``), read only by the runtime's own tool-call parsing, which phi3
does not use (it drives ``og.Generator`` and renders chat templates itself). 0.13.1 rejects them
(``Unknown value "bot_token_id"``); dropping them leaves every id phi3 generates unchanged (the
family parity suite runs Phi-4-mini on the down-levelled artifact)."""


def downlevel_genai_config(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Edit ``config`` in place; return (changes made, keys 0.13.1 is not known to read)."""
    changes: list[str] = []
    model = config.get("model")
    if isinstance(model, dict):
        for key in TOOL_TOKEN_KEYS:
            if isinstance(model.get(key), int):
                value = model.pop(key)
                changes.append(f"genai_config.json: dropped model.{key}={value} (runtime tool-call parsing only)")
    window = config.get("model", {}).get("decoder", {}).get("sliding_window")
    if isinstance(window, dict) and "cache_slack" in window and window["cache_slack"] == 0:
        del window["cache_slack"]
        changes.append("genai_config.json: dropped model.decoder.sliding_window.cache_slack=0 (the default)")
    unknown = []
    for parent, path, value in _paths(config):
        if path in KNOWN_GENAI_KEYS:
            continue
        if isinstance(value, str) and parent in FREE_FORM_STRING_PARENTS:
            continue
        unknown.append(path)
    return changes, sorted(unknown)


def infer_tokenizer_class(tokenizer_json: Mapping[str, Any]) -> str | None:
    """The slow-tokenizer class a ``tokenizer.json`` pipeline corresponds to, for the Phi-3 family.

    SentencePiece-style BPE (``▁`` for spaces, byte fallback) is Llama's; byte-level BPE is GPT-2's.
    """
    model = tokenizer_json.get("model") or {}
    text = json.dumps({k: tokenizer_json.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")})
    if model.get("type") == "BPE" and (model.get("byte_fallback") or "\u2581" in text or "\\u2581" in text):
        return "LlamaTokenizer"
    if "ByteLevel" in text:
        return "GPT2Tokenizer"
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def downlevel_tokenizer_config(
    config: dict[str, Any],
    source_config: Mapping[str, Any] | None,
    tokenizer_json: Mapping[str, Any] | None,
    chat_template: str | None,
) -> tuple[list[str], list[str]]:
    """Edit ``config`` (the artifact's tokenizer_config.json) in place; return (changes, problems)."""
    changes: list[str] = []
    problems: list[str] = []
    source = dict(source_config or {})
    current = config.get("tokenizer_class")
    if current not in KNOWN_TOKENIZER_CLASSES:
        candidate = source.get("tokenizer_class")
        if candidate not in KNOWN_TOKENIZER_CLASSES:
            candidate = infer_tokenizer_class(tokenizer_json or {})
        if candidate is not None:
            config["tokenizer_class"] = candidate
            changes.append(f"tokenizer_config.json: tokenizer_class {current!r} -> {candidate!r}")
        else:
            problems.append(f"tokenizer_config.json tokenizer_class={current!r}")
    for key in ("add_bos_token", "add_eos_token"):
        if key not in config and key in source:
            config[key] = source[key]
            changes.append(f"tokenizer_config.json: restored {key}={source[key]!r} from the checkpoint")
    if not config.get("chat_template"):
        template = source.get("chat_template") if isinstance(source.get("chat_template"), str) else chat_template
        if template:
            config["chat_template"] = template
            changes.append("tokenizer_config.json: restored the checkpoint's chat_template")
    return changes, problems


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def downlevel_artifact(folder: Path, source: Path, builder_version: str) -> CompatReport:
    """Rewrite ``folder``'s configs for :data:`OLDEST_RUNTIME`; say which runtime it now needs."""
    changes: list[str] = []
    unknown: list[str] = []
    genai_path = folder / "genai_config.json"
    genai = _read_json(genai_path)
    if genai is None:
        raise ArtifactError(f"the model builder wrote no readable genai_config.json in {folder}")
    genai_changes, genai_unknown = downlevel_genai_config(genai)
    if genai_changes:
        _write_json(genai_path, genai)
    changes += genai_changes
    unknown += [f"genai_config.json {path}" for path in genai_unknown]

    tok_path = folder / "tokenizer_config.json"
    tok = _read_json(tok_path)
    if tok is not None:
        template_file = folder / "chat_template.jinja"
        if not template_file.is_file():
            template_file = source / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
        tok_changes, tok_problems = downlevel_tokenizer_config(
            tok, _read_json(source / "tokenizer_config.json"), _read_json(folder / "tokenizer.json"), template
        )
        if tok_changes:
            _write_json(tok_path, tok)
        changes += tok_changes
        unknown += tok_problems
    needs = OLDEST_RUNTIME
    if unknown and parse_version(builder_version) > parse_version(OLDEST_RUNTIME):
        needs = builder_version
    return CompatReport(needs, changes, unknown)


def check_runtime(manifest: Mapping[str, Any], runtime_version: str, artifact_key: str) -> None:
    """Refuse, with the fix, an artifact written for a newer runtime than the one installed."""
    needed = manifest.get("runtime_min_version")
    if not isinstance(needed, str) or parse_version(runtime_version) >= parse_version(needed):
        return
    why = "; ".join(manifest.get("compat_unknown_keys") or []) or "configs this runtime cannot read"
    raise ArtifactError(
        f"this artifact needs onnxruntime-genai >= {needed} ({why}), but {runtime_version} is installed",
        hint=f"upgrade onnxruntime-genai, or rebuild it here: phi3 cache rm {artifact_key[:12]} and quantize again",
    )


__all__ = [
    "KNOWN_GENAI_KEYS",
    "KNOWN_TOKENIZER_CLASSES",
    "OLDEST_RUNTIME",
    "CompatReport",
    "check_runtime",
    "downlevel_artifact",
    "downlevel_genai_config",
    "downlevel_tokenizer_config",
    "infer_tokenizer_class",
    "parse_version",
]
