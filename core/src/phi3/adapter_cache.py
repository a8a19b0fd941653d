"""Converted LoRA adapters in phi3's cache: each backend's conversion runs once per adapter and base.

A backend's ``phi3_convert_adapter`` (a GGUF LoRA, an ``.onnx_adapter`` ...) writes into an empty temp
folder; phi3 then writes a manifest (last) and renames the folder to ``adapters/<backend>/<key>``, under
the same per-key file lock as artifacts, so concurrent processes convert once and a killed or failed
conversion leaves nothing a later run trusts. The key hashes the backend, the base artifact's key
(which already covers the model, precision, format and library versions) and the adapter's content
hash: a new base or a changed adapter converts again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from phi3.cache import KEY_LENGTH, ArtifactCache, _canonical, _file_sizes, _fsync_dir, _make_temp_dir
from phi3.fs_errors import translate_os_errors

MANIFEST_NAME = "phi3-adapter.json"
Converter = Callable[[Path], Mapping[str, Any]]


def adapter_key(backend: str, artifact_key: str, content_hash: str) -> str:
    """The cache key of one adapter converted for one base artifact by one backend."""
    identity = {"backend": backend, "artifact": artifact_key, "adapter": content_hash}
    return hashlib.sha256(_canonical(identity).encode()).hexdigest()[:KEY_LENGTH]


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete conversion whose files are all whole, else None (it is rebuilt)."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return None
    return manifest


def _commit(tmp: Path, final: Path, identity: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    manifest = {**dict(extra), **identity, "files": _file_sizes(tmp)}
    with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # a folder without a valid manifest: never trusted, replaced
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def get_or_convert(
    cache: ArtifactCache,
    backend: str,
    artifact_key: str,
    content_hash: str,
    convert: Converter,
    on_wait: Callable[[], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The cached conversion's folder and manifest, converting (once, atomically) when absent."""
    key = adapter_key(backend, artifact_key, content_hash)
    final = cache.root / "adapters" / backend / key
    found = _read_manifest(final)
    if found is not None:
        return final, found
    cache.ensure_usable()
    with cache.lock(key, on_wait):
        found = _read_manifest(final)  # another process may have finished it while we waited
        if found is not None:
            return final, found
        with translate_os_errors(f"adapter cache {final.parent}", hint="free space or fix permissions there"):
            final.parent.mkdir(parents=True, exist_ok=True)
            cache.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = _make_temp_dir(f"{key}.", cache.tmp_dir)
        try:
            extra = convert(tmp)
            identity = {"format": "phi3-adapter", "key": key, "backend": backend, "artifact_key": artifact_key}
            identity["adapter_content_hash"] = content_hash
            with translate_os_errors(f"adapter cache {final}", hint="free space or fix permissions there"):
                _commit(tmp, final, identity, extra)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    manifest = _read_manifest(final)
    assert manifest is not None
    return final, manifest


__all__ = ["MANIFEST_NAME", "adapter_key", "get_or_convert"]
