"""Model id -> local checkpoint folder (:class:`phi3.types.ModelSource`).

A model is a catalogue alias (``phi3-mini-4k``), a Hugging Face id
(``microsoft/Phi-3-mini-4k-instruct``), a local checkpoint folder, a phi3 artifact folder (from
``phi3 quantize -o``), or ``smoke``, the built-in toy model
(:mod:`phi3.smoke`, trained on a synthetic corpus and shipped with phi3-core). Hub ids download through
``huggingface_hub`` (only the files a Phi-3 needs, with its progress bars); when the hub cannot be
reached the error says how to use a local folder instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from phi3 import catalogue
from phi3.errors import ModelNotFoundError
from phi3.fs_errors import translate_os_errors
from phi3.types import ModelSource

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.tiktoken", "*.txt"]
"""What a Phi3ForCausalLM checkpoint needs: configs, safetensors weights, tokenizer files."""
SMOKE_MODEL_ID = "phi3:smoke"
SUPPORTED_ARCHITECTURES = {"Phi3ForCausalLM"}


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.replace("/", "") or bool(re.match(r"^[A-Za-z]:", spec))


def check_phi3_checkpoint(folder: Path) -> dict[str, Any]:
    """Read config.json and refuse anything that is not a Phi-3 family causal LM."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{folder} has no config.json, so it is not a Hugging Face checkpoint",
            hint="pass the folder that holds config.json, the *.safetensors weights and the tokenizer files",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{config_path} is unreadable: {exc}") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(
            f"{config_path} holds a JSON {type(config).__name__}, not a config object",
            hint="re-download the checkpoint, or pass a complete Phi-3 folder",
        )
    raw_architectures = config.get("architectures") or []
    if not isinstance(raw_architectures, list):
        raw_architectures = [raw_architectures]
    architectures = {str(a) for a in raw_architectures}
    if config.get("model_type") != "phi3" and not architectures & SUPPORTED_ARCHITECTURES:
        raise ModelNotFoundError(
            f"{folder} holds a {config.get('model_type') or 'unknown'} model "
            f"({', '.join(sorted(architectures)) or 'no architectures'}); phi3 runs the Phi-3 family "
            "(Phi3ForCausalLM: Phi-3-mini/medium, Phi-3.5-mini, Phi-4-mini)"
        )
    return dict(config)


def folder_hash(folder: Path, memo_path: Path | None = None) -> str:
    """Content hash of a local checkpoint: sha256 over sorted relative paths and file bytes.

    Hashing gigabytes takes seconds, so per-file digests are memoised by (path, size, mtime).
    """
    memo: dict[str, Any] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}
        if not isinstance(memo, dict):
            memo = {}
    outer = hashlib.sha256()
    changed = False
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        with translate_os_errors(f"model file {path}", hint="fix its permissions"):
            stat = path.stat()
        memo_key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = memo.get(memo_key)
        if digest is None:
            inner = hashlib.sha256()
            with translate_os_errors(f"model file {path}", hint="fix its permissions"), open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    inner.update(block)
            digest = inner.hexdigest()
            memo[memo_key] = digest
            changed = True
        outer.update(rel.encode() + b"\0" + str(digest).encode() + b"\n")
    if changed and memo_path is not None:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo), encoding="utf-8")
            os.replace(tmp, memo_path)
        except OSError:
            pass  # the memo only saves time: a read-only or full cache must not stop a load
    return "sha256:" + outer.hexdigest()


def local_source(folder: Path, cache_root: Path, model_id: str | None = None) -> ModelSource:
    folder = folder.expanduser().resolve()
    check_phi3_checkpoint(folder)
    revision = folder_hash(folder, cache_root / "hashes.json")
    return ModelSource(path=folder, model_id=model_id or str(folder), revision=revision)


def smoke_source(cache_root: Path) -> ModelSource:
    """The built-in smoke model: a toy Phi-3 trained on a synthetic corpus, shipped with phi3-core
    (:mod:`phi3.smoke`)."""
    from phi3 import smoke

    try:
        folder = smoke.checkpoint()
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            f"the smoke model's files are missing from this phi3-core install ({exc})",
            hint="reinstall phi3-core (pip install --force-reinstall phi3-core)",
        ) from None
    return local_source(folder, cache_root, model_id=SMOKE_MODEL_ID)


def hub_source(repo_id: str, revision: str | None) -> ModelSource:
    """Download (or find in the HF cache) the files a Phi-3 checkpoint needs."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    local_hint = (
        f"download it on a connected machine (hf download {repo_id} --local-dir DIR), "
        "then pass that local folder instead of the id"
    )
    from phi3.progress import download_progress_bars

    try:
        with download_progress_bars():
            folder = Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except hf_errors.LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise ModelNotFoundError(
            f"{repo_id} is not in the local Hugging Face cache and {why}", hint=local_hint
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"no model {repo_id!r} on the Hugging Face hub (or it is private)",
            hint="check the id, or run `hf auth login` for a private repo",
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo_id} has no revision {revision!r}") from None
    except hf_errors.GatedRepoError:
        raise ModelNotFoundError(f"{repo_id} is gated", hint="accept its licence on the hub and log in") from None
    except OSError as exc:
        raise ModelNotFoundError(f"downloading {repo_id} failed: {exc}", hint=local_hint) from None
    check_phi3_checkpoint(folder)
    return ModelSource(path=folder, model_id=repo_id, revision=folder.name)


def resolve_model(spec: str | os.PathLike[str], cache_root: Path, revision: str | None = None) -> ModelSource:
    """Turn what the user typed into a local Phi-3 checkpoint folder with a stable identity."""
    text = os.fspath(spec)
    if not text.strip():
        raise ModelNotFoundError(
            "the model argument is empty", hint="pass an alias (phi3-mini-4k), a Hugging Face id, or a folder"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return local_source(path, cache_root)
    if text.lower() == catalogue.SMOKE_ALIAS:
        return smoke_source(cache_root)
    entry = catalogue.lookup(text)
    if entry is not None:
        return hub_source(entry.repo_id, revision)
    if _looks_like_path(text) or path.exists():
        raise ModelNotFoundError(f"no such model folder: {path}")
    if HUB_ID.match(text):
        return hub_source(text, revision)
    aliases = ", ".join([catalogue.SMOKE_ALIAS, *catalogue.CATALOGUE])
    raise ModelNotFoundError(
        f"{text!r} is neither a folder, a Hugging Face id (owner/name) nor a known alias",
        hint=f"known aliases: {aliases}",
    )


__all__ = ["SMOKE_MODEL_ID", "check_phi3_checkpoint", "folder_hash", "resolve_model"]
