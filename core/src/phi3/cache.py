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
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock

from phi3._version import __version__
from phi3.errors import ArtifactError, ConfigError, Phi3Error
from phi3.fs_errors import MIB, check_free_space, disk_full_error, free_bytes, is_disk_full, translate_os_errors
from phi3.types import Artifact, ModelSource

MANIFEST_NAME = "phi3-manifest.json"
MANIFEST_VERSION = 1
KEY_LENGTH = 24
MIN_KEY_PREFIX = 4
"""``phi3 cache rm`` takes a key or a prefix of at least this many characters of one."""
_KEY = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")
_KEY_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_KEY_PREFIX},{KEY_LENGTH}}}")
_OUTPUT_TMP_MARK = ".phi3-tmp."


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
        return hashlib.sha256(_canonical(self.identity()).encode()).hexdigest()[:KEY_LENGTH]


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


def _tree_size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


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


def rebuild_hint(folder: Path) -> str:
    """The fix for a damaged artifact: ``phi3 cache rm KEY`` inside PHI3_HOME, else a rebuild with ``-o``.

    Backends word their own artifact read errors with it too, so every such error names one command.
    """
    if _inside(phi3_home() / "artifacts", folder):
        return f"delete it (phi3 cache rm {folder.name}) and run again to rebuild"
    return f"rebuild it: phi3 quantize MODEL -o {folder} --overwrite"


def read_artifact(folder: Path, *, from_cache: bool) -> Artifact:
    """Open an artifact folder, checking that every file the manifest lists is whole.

    Sizes catch truncation cheaply; deeper corruption is for the backend's loader to report.
    """
    manifest_path = folder / MANIFEST_NAME
    fix = rebuild_hint(folder)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} is not a phi3 artifact (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact manifest {manifest_path} is unreadable: {exc}", hint=fix) from None
    if not isinstance(manifest, dict) or manifest.get("format") != "phi3-artifact":
        raise ArtifactError(f"{manifest_path} is not a phi3 artifact manifest", hint=fix)
    context = manifest.get("context_length")
    if context is not None and not (isinstance(context, int) and not isinstance(context, bool) and context > 0):
        raise ArtifactError(f"{manifest_path} has context_length {context!r}, not a whole number of tokens", hint=fix)
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(rel, str) and _is_size(size) for rel, size in files.items()):
        raise ArtifactError(f"{manifest_path} has a malformed 'files' table", hint=fix)
    for rel, size in files.items():
        path = folder / rel
        if not _inside(folder, path):
            raise ArtifactError(f"{manifest_path} lists {rel!r}, which is outside the artifact", hint=fix)
        if not path.is_file():
            raise ArtifactError(f"artifact {folder} is missing {rel}", hint=fix)
        try:
            with open(path, "rb") as fh:  # readable by this user (size alone would not say)
                fh.read(1)
        except OSError as exc:
            denied = exc.errno in (errno.EACCES, errno.EPERM)
            raise ArtifactError(
                f"artifact file {path} cannot be read: {exc.strerror or exc}",
                hint=f"fix its permissions, or {fix}" if denied else fix,
            ) from None
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


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (resolved) lies inside ``root`` (resolved): guards every delete and read."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def is_artifact(folder: Path) -> bool:
    """Whether ``folder`` claims to be an artifact (its manifest exists; a damaged one, even a folder
    in its place, is then reported by :func:`read_artifact`, not mistaken for a checkpoint)."""
    return (folder / MANIFEST_NAME).exists()


def _umask_mode() -> int:
    """The mode ``mkdir`` would give a new folder (``mkdtemp`` makes 0700, which breaks sharing)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _make_temp_dir(prefix: str, parent: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    if sys.platform != "win32":
        os.chmod(tmp, _umask_mode())
    return tmp


def check_key_prefix(text: str) -> str:
    """A key as ``phi3 cache list`` prints it (or a prefix of one): hex only, so never a path or pattern."""
    if not isinstance(text, str) or not _KEY_PREFIX.fullmatch(text):
        raise ConfigError(
            f"{text!r} is not an artifact key",
            hint=f"give a key from `phi3 cache list`, or its first {MIN_KEY_PREFIX} or more characters (0-9, a-f)",
        )
    return text


def check_age_days(value: float) -> float:
    """``prune --older-than``: a finite, non-negative number of days (NaN or -1 would match everything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"--older-than must be a finite number of days >= 0, got {value!r}",
            hint="for example --older-than 30",
        )
    return float(value)


_TARGET_BYTES_PER_WEIGHT = {"int4": 0.75, "int8": 1.1, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}
"""Artifact bytes per weight by precision (int4 keeps embeddings and some layers in int8, plus scales)."""
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def estimate_build_bytes(spec: ArtifactSpec) -> int | None:
    """Roughly how much disk a build of ``spec`` needs at its peak, from the checkpoint's weight files.

    The artifact (weights at the target precision) plus, for int4/int8, a scratch copy at the
    checkpoint's precision (backends export first, then compress), plus 10%. None when the
    source has no weight files phi3 can size.
    """
    folder = spec.source.path
    try:
        weights = sum(p.stat().st_size for pattern in _WEIGHT_FILES for p in Path(folder).glob(pattern) if p.is_file())
        others = sum(p.stat().st_size for p in Path(folder).glob("*.json") if p.is_file())
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if not weights:
        return None
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16") if isinstance(config, dict) else ""
    source_bytes = 4.0 if dtype in ("float32", "fp32") else 2.0
    target = _TARGET_BYTES_PER_WEIGHT.get(spec.precision, source_bytes)
    need = weights * target / source_bytes + others
    if spec.precision in ("int4", "int8"):
        need += weights
    return int(need * 1.1)


_COMMIT = threading.Lock()
"""Held while a finished build is committed (manifest + rename), so Ctrl-C never removes a folder mid-rename."""
_exit_on_interrupt = False


def exit_on_interrupt_during_builds(enabled: bool = True) -> None:
    """Ctrl-C during a build ends the process with exit code 130, from a watcher thread (the CLI's choice).

    Python turns SIGINT into KeyboardInterrupt in whatever Python code the main thread runs next,
    and during an export that is often a callback inside C++ (torch tracing, OpenVINO's frontends,
    openvino_tokenizers): there it surfaced as a traceback, ``terminate called ...`` and SIGABRT
    (rc -6), or a segfault (rc -11). With this on, the C-level handler only writes to a wakeup
    pipe; a thread reading it removes the build's temp folder (waiting out a commit in progress)
    and calls ``os._exit(130)``, so no exception ever crosses vendor code. API users keep Python's
    KeyboardInterrupt (the temp folder is removed as it unwinds).
    """
    global _exit_on_interrupt
    _exit_on_interrupt = enabled


@contextlib.contextmanager
def _interrupt_ends_process(tmp: Path) -> Iterator[None]:
    if (
        not _exit_on_interrupt
        or threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "pthread_sigmask")
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # someone chose their own handling
    ):
        yield
        return
    done = threading.Event()

    def watch() -> None:
        signal.sigwait({signal.SIGINT})
        if done.is_set():
            return
        with _COMMIT:  # a commit in progress finishes (its artifact is whole); none starts after
            shutil.rmtree(tmp, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.write(2, b"\nInterrupted.\n")
            os._exit(130)

    # Blocked in this thread, SIGINT is blocked in every thread vendors start from now on (they
    # inherit the mask) and in the watcher, which takes it with sigwait: it is never delivered
    # inside vendor code. A thread started earlier may still catch it: Python's handler then
    # forwards it to the watcher.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    watcher = threading.Thread(target=watch, name="phi3-interrupt", daemon=True)
    watcher.start()
    ident = watcher.ident
    assert ident is not None
    previous = signal.signal(signal.SIGINT, lambda signum, frame: signal.pthread_kill(ident, signal.SIGINT))
    try:
        yield
    finally:
        done.set()
        signal.pthread_kill(ident, signal.SIGINT)
        watcher.join()
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


Builder = Callable[[Path], Mapping[str, Any]]
_HOME_HINT = "set PHI3_HOME to a folder you can write, or fix this one's permissions or free space"


class ArtifactCache:
    """Operations on one cache root. Cheap to construct; creates folders lazily.

    Every delete goes through :meth:`_delete_inside`, which refuses any path outside the root: a
    bad key, a symlink or a malformed manifest can never make phi3 remove a user's file.
    """

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

    @property
    def outputs_dir(self) -> Path:
        """Records of ``quantize -o`` builds in progress, so ``prune`` can clean a killed one's temp folder."""
        return self.tmp_dir / "outputs"

    def ensure_usable(self, *, writable: bool = True) -> None:
        """Create the root (if needed) and check it is a folder (writable, unless only reading), naming the fix.

        A read-only cache still serves the artifacts it holds; building into it needs ``writable``.
        """
        with translate_os_errors(f"phi3's cache folder {self.root}", hint=_HOME_HINT):
            if self.root.exists() and not self.root.is_dir():
                raise Phi3Error(f"phi3's cache folder {self.root} is a file, not a folder", hint=_HOME_HINT)
            if not self.root.exists():
                self.root.mkdir(parents=True, exist_ok=True)
            if writable and not os.access(self.root, os.W_OK | os.X_OK):
                raise Phi3Error(f"phi3's cache folder {self.root} is not writable", hint=_HOME_HINT)

    def _mkdir(self, path: Path) -> Path:
        with translate_os_errors(f"phi3's cache folder {path}", hint=_HOME_HINT):
            if path.exists() and not path.is_dir():
                raise Phi3Error(
                    f"{path} is a file where phi3 keeps a folder",
                    hint="move that file away, or set PHI3_HOME to another folder",
                )
            path.mkdir(parents=True, exist_ok=True)
        return path

    def compiled_dir(self, backend: str) -> Path:
        """Per-backend folder for compiled blobs (created on demand)."""
        return self._mkdir(self.root / "compiled" / backend)

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
        path = self._mkdir(self.locks_dir) / f"{key}.lock"
        with translate_os_errors(f"lock file {path}", hint=f"remove {path} (no phi3 process uses it) and retry"):
            if path.exists() and not path.is_file():
                raise Phi3Error(f"lock file {path} is not a file", hint=f"remove {path} and retry")
            lock = filelock.FileLock(str(path))
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
        self.ensure_usable()
        found = self.lookup(spec)
        if found is not None:
            return found
        with self.lock(spec.key, on_wait):
            found = self.lookup(spec)  # another process may have finished it while we waited
            if found is not None:
                return found
            self._remove_stale_builds(spec.key)
            final = self.path_for(spec)
            self._mkdir(final.parent)
            if final.exists():  # a folder without a manifest: never trusted, replaced
                self._delete_inside(final)
            self._build_atomically(spec, build, final, self._mkdir(self.tmp_dir), f"{spec.key}.")
            return read_artifact(final, from_cache=False)

    def build_to(self, spec: ArtifactSpec, build: Builder, dest: Path, *, overwrite: bool = False) -> Artifact:
        """Build into a user-named folder ``dest`` with the same atomicity (temp sibling + rename).

        A folder that exists is never removed or replaced, unless it is a phi3 artifact and
        ``overwrite`` is true: then the new build replaces it only once it is complete.
        """
        dest = Path(os.path.abspath(dest.expanduser()))
        self._check_output(dest, overwrite)
        self.ensure_usable()
        lock_key = "output-" + hashlib.sha256(str(dest).encode()).hexdigest()[:KEY_LENGTH]

        def busy() -> None:  # two builds into one folder: one would only discard the other's work
            raise Phi3Error(
                f"another phi3 process is building into {dest} right now",
                hint="wait for it to finish (then pass --overwrite to replace its artifact), or name another folder",
            )

        with self.lock(lock_key, on_wait=busy):
            self._check_output(dest, overwrite)  # another process may have written it while we waited
            with translate_os_errors(f"output folder {dest.parent}", hint="choose a folder you can write"):
                dest.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale_outputs(dest)
            record = self._mkdir(self.outputs_dir) / f"{lock_key}.json"
            record.write_text(json.dumps({"dest": str(dest)}), encoding="utf-8")
            try:
                self._build_atomically(
                    spec, build, dest, dest.parent, f".{dest.name}{_OUTPUT_TMP_MARK}", replace=overwrite
                )
            finally:
                record.unlink(missing_ok=True)
        return read_artifact(dest, from_cache=False)

    @staticmethod
    def _check_output(dest: Path, overwrite: bool) -> None:
        if not dest.exists() and not dest.is_symlink():
            return
        if not dest.is_dir() or not is_artifact(dest):
            raise Phi3Error(
                f"output folder {dest} already exists",
                hint="name a folder that does not exist yet: phi3 never replaces a folder it did not write",
            )
        if not overwrite:
            raise Phi3Error(
                f"{dest} already holds a phi3 artifact", hint="pass --overwrite to replace it, or name a new folder"
            )

    def _build_atomically(
        self, spec: ArtifactSpec, build: Builder, final: Path, parent: Path, prefix: str, *, replace: bool = False
    ) -> None:
        needs = estimate_build_bytes(spec)
        check_free_space(parent, needs)
        with translate_os_errors(f"temporary build folder in {parent}", hint="free space or fix permissions there"):
            tmp = _make_temp_dir(prefix, parent)
        try:
            with _interrupt_ends_process(tmp):
                try:
                    extra = build(tmp)
                    with _COMMIT, translate_os_errors(f"artifact folder {final}", hint="free space or fix permissions"):
                        write_manifest(tmp, spec, extra or {})
                        _fsync_dir(tmp)
                        if replace and final.exists():
                            old = _make_temp_dir(f".{final.name}.phi3-old.", parent)
                            os.replace(final, old / final.name)
                            os.replace(tmp, final)
                            shutil.rmtree(old, ignore_errors=True)
                        else:
                            os.rename(tmp, final)
                        _fsync_dir(final.parent)
                except Exception as exc:
                    if is_disk_full(exc, tmp):  # before the partial build is removed: its size is the evidence
                        written = _tree_size(tmp)  # the estimate may be low: the build needed more than this
                        raise disk_full_error(parent, max(needs or 0, written + MIB), free_bytes(tmp)) from exc
                    raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _remove_stale_builds(self, key: str) -> None:
        """Delete temp folders of ``key`` left by killed builds (we hold its lock, so none is live)."""
        if self.tmp_dir.is_dir():
            for path in self.tmp_dir.iterdir():
                if path.name.startswith(f"{key}.") and path.is_dir():
                    self._delete_inside(path, root=self.tmp_dir)

    @staticmethod
    def _remove_stale_outputs(dest: Path) -> list[Path]:
        """Delete temp siblings of ``dest`` left by a killed ``quantize -o`` (the caller holds its lock)."""
        prefix = f".{dest.name}{_OUTPUT_TMP_MARK}"
        removed = []
        if dest.parent.is_dir():
            for path in sorted(dest.parent.iterdir()):
                if path.name.startswith(prefix) and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed

    def _delete_inside(self, path: Path, root: Path | None = None) -> None:
        """Remove ``path``, which must be inside ``root`` (default: the cache root); never follow a link out."""
        root = root if root is not None else self.root
        if path.is_symlink():
            if not _inside(root, path.parent):
                raise Phi3Error(f"refusing to remove {path}: it is outside {root}")
            path.unlink()
            return
        if not _inside(root, path) or path.resolve() == root.resolve():
            raise Phi3Error(f"refusing to remove {path}: it is outside {root}")
        shutil.rmtree(path, ignore_errors=True)

    # -- phi3 cache list / rm / prune ---------------------------------------------------------

    def artifacts(self) -> list[Artifact]:
        """Every complete artifact; unreadable ones are skipped (``prune`` reports them)."""
        found = []
        for folder in self._artifact_folders():
            if not is_artifact(folder):
                continue
            try:
                found.append(read_artifact(folder, from_cache=True))
            except ArtifactError:
                continue
        return found

    def _artifact_folders(self) -> list[Path]:
        """``artifacts/<backend>/<key>`` folders (complete or not) whose name is a real key."""
        if not self.artifacts_dir.is_dir():
            return []
        return sorted(
            folder
            for backend in self.artifacts_dir.iterdir()
            if backend.is_dir() and not backend.is_symlink()
            for folder in backend.iterdir()
            if _KEY.fullmatch(folder.name) and (folder.is_dir() or folder.is_symlink())
        )

    def find(self, key_prefix: str) -> list[Path]:
        """Artifact folders whose key starts with ``key_prefix`` (hex, at least ``MIN_KEY_PREFIX`` long).

        Keys are compared as strings, never used as a path or a glob pattern.
        """
        check_key_prefix(key_prefix)
        return [folder for folder in self._artifact_folders() if folder.name.startswith(key_prefix)]

    def remove(self, folder: Path) -> None:
        """Remove an artifact: rename it out of ``artifacts/`` first so a reader never sees half."""
        if not (folder.parent.parent == self.artifacts_dir and _KEY.fullmatch(folder.name)):
            raise Phi3Error(f"refusing to remove {folder}: it is not an artifact folder of {self.root}")
        if folder.is_symlink():
            folder.unlink()
            return
        if not _inside(self.artifacts_dir, folder):
            raise Phi3Error(f"refusing to remove {folder}: it is outside {self.artifacts_dir}")
        with translate_os_errors(f"artifact {folder}", hint="fix the cache folder's permissions"):
            doomed = _make_temp_dir("removing.", self._mkdir(self.tmp_dir))
            os.replace(folder, doomed / folder.name)
            shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, *, older_than_days: float | None = None) -> list[Path]:
        """Remove leftovers of killed builds, corrupt artifacts, and optionally old artifacts."""
        cutoff = time.time() - check_age_days(older_than_days) * 86400 if older_than_days is not None else None
        removed: list[Path] = []
        removed += self._prune_outputs()
        if self.tmp_dir.is_dir():
            for path in sorted(self.tmp_dir.iterdir()):
                if path == self.outputs_dir:
                    continue
                key = path.name.split(".", 1)[0]
                if path.name.startswith("removing.") or (_KEY.fullmatch(key) and self._lock_is_free(key)):
                    self._delete_inside(path, root=self.tmp_dir)
                    removed.append(path)
        for folder in self._artifact_folders():
            try:
                read_artifact(folder, from_cache=True)
                stale = cutoff is not None and (folder / MANIFEST_NAME).stat().st_mtime < cutoff
            except ArtifactError:
                stale = True
            if stale:
                self.remove(folder)
                removed.append(folder)
        return removed

    def _prune_outputs(self) -> list[Path]:
        """Temp folders of killed ``quantize -o`` builds, found through their records."""
        removed: list[Path] = []
        if not self.outputs_dir.is_dir():
            return removed
        for record in sorted(self.outputs_dir.glob("output-*.json")):
            lock = filelock.FileLock(str(self._mkdir(self.locks_dir) / f"{record.stem}.lock"))
            try:
                lock.acquire(timeout=0)  # held while removing: a build of the same folder waits
            except filelock.Timeout:
                continue  # that build is still running
            try:
                dest = Path(json.loads(record.read_text(encoding="utf-8"))["dest"])
                removed += self._remove_stale_outputs(dest)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable record: nothing to find through it
            finally:
                record.unlink(missing_ok=True)
                lock.release()
        return removed

    def _lock_is_free(self, key: str) -> bool:
        lock = filelock.FileLock(str(self._mkdir(self.locks_dir) / f"{key}.lock"))
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
    "MIN_KEY_PREFIX",
    "ArtifactCache",
    "ArtifactSpec",
    "check_age_days",
    "check_key_prefix",
    "estimate_build_bytes",
    "exit_on_interrupt_during_builds",
    "is_artifact",
    "phi3_home",
    "read_artifact",
    "rebuild_hint",
    "write_manifest",
]
