"""The artifact cache: keyed, locked, atomic, with a manifest per artifact.

Quantizing a Phi-3 model takes minutes, so artifacts are kept under ``PHI3_HOME`` (else the
platform's user cache dir)::

    artifacts/<backend>/<key>/      finished artifacts, each with phi3-manifest.json
    tmp/<key>.<random>/             builds in progress (same filesystem, so rename is atomic)
    locks/<key>.lock                serialises concurrent builds of one key
    compiled/<backend>/             backends' compiled-blob caches (OpenVINO CACHE_DIR ...)
    models/                         the built-in smoke model
    hashes.json                     memo of local folders' content hashes

An artifact folder only ever appears under ``artifacts/`` by ``os.replace`` of a finished build
that already contains its manifest, so a killed quantization leaves at most a ``tmp/`` folder
that nothing trusts and ``phi3 cache prune`` removes. The key covers the backend, the source
model identity (hub id + commit, or a content hash of a local folder), precision, artifact format,
artifact-shaping options and the backend libraries' versions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from phi3._version import __version__
from phi3.errors import ArtifactError, Phi3Error
from phi3.types import Artifact, ModelSource

MANIFEST_NAME = "phi3-manifest.json"
MANIFEST_VERSION = 1


def phi3_home() -> Path:
    """Root of phi3's cache: ``$PHI3_HOME`` or the platform user cache dir."""
    env = os.environ.get("PHI3_HOME")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("phi3", appauthor=False))


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class ArtifactSpec:
    """Everything that determines an artifact's bytes: the cache key is a hash of it."""

    backend: str
    source: ModelSource
    precision: str
    artifact_format: str
    options: Mapping[str, Any]
    library_versions: Mapping[str, str]

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "source": {"model_id": self.source.model_id, "revision": self.source.revision},
            "precision": self.precision,
            "artifact_format": self.artifact_format,
            "options": dict(self.options),
            "library_versions": dict(self.library_versions),
        }

    @property
    def key(self) -> str:
        return hashlib.sha256(_canonical(self.identity()).encode()).hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sizes(folder: Path) -> dict[str, int]:
    sizes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            sizes[path.relative_to(folder).as_posix()] = path.stat().st_size
    return sizes


def write_manifest(folder: Path, spec: ArtifactSpec, extra: Mapping[str, Any]) -> dict[str, Any]:
    """Write the manifest (last, fsynced): its presence is what marks the build complete."""
    manifest: dict[str, Any] = {
        "format": "phi3-artifact",
        "manifest_version": MANIFEST_VERSION,
        "key": spec.key,
        **spec.identity(),
        "phi3_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in extra.items() if k not in ("files", "key")},
        "files": _file_sizes(folder),
    }
    path = folder / MANIFEST_NAME
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


def read_artifact(folder: Path, *, from_cache: bool) -> Artifact:
    """Open an artifact folder, checking that every file the manifest lists is whole.

    Sizes catch truncation cheaply; deeper corruption is for the backend's loader to report.
    """
    manifest_path = folder / MANIFEST_NAME
    fix = f"delete it (phi3 cache rm {folder.name}) and run again to rebuild"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} is not a phi3 artifact (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact manifest {manifest_path} is unreadable: {exc}", hint=fix) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "phi3-artifact":
        raise ArtifactError(f"{manifest_path} is not a phi3 artifact manifest", hint=fix)
    for rel, size in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"artifact {folder} is missing {rel}", hint=fix)
        actual = path.stat().st_size
        if actual != size:
            raise ArtifactError(
                f"artifact file {path} is {actual} bytes, the manifest says {size}: it is corrupt", hint=fix
            )
    return Artifact(
        path=folder,
        backend=str(manifest.get("backend")),
        precision=str(manifest.get("precision")),
        artifact_format=str(manifest.get("artifact_format", "")),
        key=str(manifest.get("key")),
        manifest=manifest,
        from_cache=from_cache,
    )


def is_artifact(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file()


Builder = Callable[[Path], Mapping[str, Any]]


class ArtifactCache:
    """Operations on one cache root. Cheap to construct; creates folders lazily."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else phi3_home()

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def compiled_dir(self, backend: str) -> Path:
        """Per-backend folder for compiled blobs (created on demand)."""
        path = self.root / "compiled" / backend
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path_for(self, spec: ArtifactSpec) -> Path:
        return self.artifacts_dir / spec.backend / spec.key

    def lookup(self, spec: ArtifactSpec) -> Artifact | None:
        folder = self.path_for(spec)
        if not is_artifact(folder):
            return None
        return read_artifact(folder, from_cache=True)

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the build lock of ``key``; ``on_wait`` is called once if another process has it."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.locks_dir / f"{key}.lock"))
        try:
            lock.acquire(timeout=0.5)
        except filelock.Timeout:
            if on_wait is not None:
                on_wait()
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def get_or_build(self, spec: ArtifactSpec, build: Builder, on_wait: Callable[[], None] | None = None) -> Artifact:
        """Return the cached artifact for ``spec``, building it (once, atomically) if absent."""
        found = self.lookup(spec)
        if found is not None:
            return found
        with self.lock(spec.key, on_wait):
            found = self.lookup(spec)  # another process may have finished it while we waited
            if found is not None:
                return found
            self._remove_stale_builds(spec.key)
            final = self.path_for(spec)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a folder without a manifest: never trusted, replaced
                shutil.rmtree(final)
            self._build_atomically(spec, build, final)
            return read_artifact(final, from_cache=False)

    def build_to(self, spec: ArtifactSpec, build: Builder, dest: Path) -> Artifact:
        """Build into a user-named folder ``dest`` with the same atomicity (temp sibling + rename)."""
        dest = dest.expanduser().resolve()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise Phi3Error(
                f"output path {dest} already exists and is not empty", hint="choose a new folder or delete this one"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()
        self._build_atomically(spec, build, dest, tmp_parent=dest.parent)
        return read_artifact(dest, from_cache=False)

    def _build_atomically(
        self, spec: ArtifactSpec, build: Builder, final: Path, tmp_parent: Path | None = None
    ) -> None:
        parent = tmp_parent if tmp_parent is not None else self.tmp_dir
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f"{spec.key}." if tmp_parent is None else f".{final.name}.phi3-tmp."
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        try:
            extra = build(tmp)
            write_manifest(tmp, spec, extra or {})
            _fsync_dir(tmp)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _remove_stale_builds(self, key: str) -> None:
        """Delete temp folders of ``key`` left by killed builds (we hold its lock, so none is live)."""
        if self.tmp_dir.is_dir():
            for path in self.tmp_dir.glob(f"{key}.*"):
                shutil.rmtree(path, ignore_errors=True)

    # -- phi3 cache list / rm / prune ---------------------------------------------------------

    def artifacts(self) -> list[Artifact]:
        """Every complete artifact; unreadable ones are skipped (``prune`` reports them)."""
        found = []
        if self.artifacts_dir.is_dir():
            for manifest in sorted(self.artifacts_dir.glob(f"*/*/{MANIFEST_NAME}")):
                try:
                    found.append(read_artifact(manifest.parent, from_cache=True))
                except ArtifactError:
                    continue
        return found

    def find(self, key_prefix: str) -> list[Path]:
        """Artifact folders whose key starts with ``key_prefix``."""
        if not key_prefix or not self.artifacts_dir.is_dir():
            return []
        return sorted(p for p in self.artifacts_dir.glob(f"*/{key_prefix}*") if p.is_dir())

    def remove(self, folder: Path) -> None:
        """Remove an artifact: rename it out of ``artifacts/`` first so a reader never sees half."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(prefix="removing.", dir=self.tmp_dir))
        os.replace(folder, doomed / folder.name)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, *, older_than_days: float | None = None) -> list[Path]:
        """Remove leftovers of killed builds, corrupt artifacts, and optionally old artifacts."""
        removed: list[Path] = []
        if self.tmp_dir.is_dir():
            for path in sorted(self.tmp_dir.iterdir()):
                key = path.name.split(".", 1)[0]
                if path.name.startswith("removing.") or self._lock_is_free(key):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        if self.artifacts_dir.is_dir():
            cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
            for folder in sorted(self.artifacts_dir.glob("*/*")):
                if not folder.is_dir():
                    continue
                try:
                    read_artifact(folder, from_cache=True)
                    stale = cutoff is not None and (folder / MANIFEST_NAME).stat().st_mtime < cutoff
                except ArtifactError:
                    stale = True
                if stale:
                    self.remove(folder)
                    removed.append(folder)
        return removed

    def _lock_is_free(self, key: str) -> bool:
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.locks_dir / f"{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        lock.release()
        return True

    def size_of(self, folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


__all__ = [
    "MANIFEST_NAME",
    "ArtifactCache",
    "ArtifactSpec",
    "is_artifact",
    "phi3_home",
    "read_artifact",
    "write_manifest",
]
