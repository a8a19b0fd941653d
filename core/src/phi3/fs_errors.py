"""File-system failures as phi3 errors that name the path and the fix.

A full disk, a read-only cache folder or a file where phi3 expects a folder are the user's to fix,
so they must read as one line that says which path and what to do, not as ``unexpected
PermissionError ... this is a bug in phi3``. Core wraps its own file operations in
:func:`translate_os_errors`; :func:`describe_os_error` is the one place that words them.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from phi3.errors import Phi3Error

_REASONS = {
    errno.ENOSPC: ("there is no space left on the device", "free space on that disk, or set PHI3_HOME elsewhere"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space, or set PHI3_HOME elsewhere"),
    errno.EACCES: ("permission is denied", "fix that folder's permissions, or set PHI3_HOME elsewhere"),
    errno.EPERM: ("the operation is not permitted", "fix that folder's permissions, or set PHI3_HOME elsewhere"),
    errno.EROFS: ("the file system is read-only", "set PHI3_HOME to a writable folder"),
    errno.ENOTDIR: ("a file stands where a folder is needed", "move that file away, or set PHI3_HOME elsewhere"),
    errno.EISDIR: ("a folder stands where a file is needed", "move that folder away and retry"),
    errno.EEXIST: ("something already exists there", "move it away and retry"),
    errno.ENOENT: ("it does not exist", "check the path"),
    errno.ENAMETOOLONG: ("the path is too long", "use a shorter path"),
    errno.EFBIG: ("the file size limit is exceeded", "raise the file size limit (ulimit -f), or free space"),
}


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
"""How Rust's std::io::Error ends its message (safetensors, tokenizers): ``File too large (os error 27)``."""


def os_errno_of(exc: BaseException) -> int | None:
    """The errno behind ``exc``: an OSError in its chain, or one named in a vendor's message text.

    Vendor libraries wrap I/O failures in their own exception types (``SafetensorError: ... I/O
    error: No space left on device (os error 28)``), so the chain and the text are both searched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        text = str(current)
        match = _RUST_OS_ERROR.search(text)
        if match:
            return int(match.group(1))
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            if os.strerror(code) in text:
                return code
        current = current.__cause__ or current.__context__
    return None


class FileSystemError(Phi3Error, OSError):
    """A file operation phi3 needed failed for a reason the user can fix (space, permissions, paths)."""


def describe_os_error(exc: OSError, what: str, hint: str | None = None) -> FileSystemError:
    """``exc`` as one line: which path (``what`` plus the file it names) and why, with the fix."""
    reason, default_hint = _REASONS.get(exc.errno or -1, (exc.strerror or type(exc).__name__, None))
    path = exc.filename if exc.filename is not None else None
    where = f"{what} ({path})" if path is not None and str(path) not in what else what
    return FileSystemError(f"cannot use {where}: {reason}", hint=hint if hint else default_hint)


@contextlib.contextmanager
def translate_os_errors(what: str, hint: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into a :class:`FileSystemError` about ``what``."""
    try:
        yield
    except Phi3Error:
        raise
    except OSError as exc:
        reason_hint = hint
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            reason_hint = _REASONS[errno.ENOSPC][1]  # "fix permissions" would be the wrong advice
        raise describe_os_error(exc, what, reason_hint) from exc


MIB = 1024 * 1024
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_CPP_STREAM_FAILURES = ("basic_ios::clear", "iostream error", "ios_base::failure")
"""How a C++ ``std::ofstream`` with exceptions on reports a failed write (libstdc++'s
``std::ios_base::failure`` text, no errno): OpenVINO 2026.4's ``ov::save_model`` writing an IR to a
full disk fails with ``basic_ios::clear: iostream error``."""
_NEARLY_FULL = MIB
"""Below this much free space, any failure of a build writing there is taken to be the full disk."""
_STREAM_FULL = 64 * MIB
"""Below this much free space, a C++ stream failure of a build writing there is taken to be the full disk."""


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``path``'s file system (its nearest existing folder)."""
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        stat = os.statvfs(probe)
    except (OSError, AttributeError):  # no statvfs on Windows: shutil.disk_usage there
        try:
            return shutil.disk_usage(probe).free
        except OSError:
            return None
    return stat.f_bavail * stat.f_frsize


def mount_point(path: Path) -> Path:
    """The mount point of the file system that holds ``path`` (the "device" a message names)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    while not os.path.ismount(probe) and probe.parent != probe:
        probe = probe.parent
    return probe


def _mb(size: int) -> str:
    """Megabytes for a message: one decimal below 10 MB (tiny test models), whole ones above."""
    mb = size / MIB
    return f"{math.ceil(mb * 10) / 10:.1f}" if mb < 10 else f"{math.ceil(mb):,}"


class DiskFullError(FileSystemError):
    """A build ran (or would run) out of space: names the file system, the folder and the space needed."""


def disk_full_error(path: Path, needs: int | None, free: int | None = None) -> DiskFullError:
    """``no space left on DEVICE (path), needs ~N MB``, with how much is free and the fix.

    ``free`` is what was free when the write failed (default: now).
    """
    free = free_bytes(path) if free is None else free
    need = f", needs ~{_mb(needs)} MB" if needs else ""
    have = f" ({_mb(free)} MB free)" if free is not None else ""
    return DiskFullError(
        f"no space left on {mount_point(path)} ({path}){need}{have}",
        hint="free space on that disk, or build on another one: set PHI3_HOME there, or pass -o DIR on it",
    )


def check_free_space(path: Path, needs: int | None) -> None:
    """Refuse up front a build that cannot fit (``needs`` is an estimate; None skips the check)."""
    if not needs:
        return
    free = free_bytes(path)
    if free is not None and free < needs:
        raise disk_full_error(path, needs)


def _chain_text(exc: BaseException) -> str:
    seen: set[int] = set()
    parts = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(str(current))
        current = current.__cause__ or current.__context__
    return " ".join(parts)


def is_disk_full(exc: BaseException, path: Path) -> bool:
    """Whether ``exc``, raised while writing under ``path``, was (most likely) the disk filling up.

    An errno in the chain or the text decides; vendors that lose the errno (C++ iostreams, Rust
    wrappers, libraries that catch and re-raise with their own words) are caught by the space the
    file system has left at the moment of failure (call this before the partial output is removed).
    """
    code = os_errno_of(exc)
    if code in _FULL_ERRNOS:
        return True
    if code is not None and code != errno.EIO:
        return False  # a permission, a missing path...: their own message says so
    free = free_bytes(path)
    if free is None:
        return False
    if free < _NEARLY_FULL:
        return True
    return free < _STREAM_FULL and any(marker in _chain_text(exc) for marker in _CPP_STREAM_FAILURES)


__all__ = [
    "DiskFullError",
    "FileSystemError",
    "check_free_space",
    "describe_os_error",
    "disk_full_error",
    "free_bytes",
    "is_disk_full",
    "mount_point",
    "os_errno_of",
    "translate_os_errors",
]
