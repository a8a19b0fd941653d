"""File-system failures as phi3 errors that name the path and the fix.

A full disk, a read-only cache folder or a file where phi3 expects a folder are the user's to fix,
so they must read as one line that says which path and what to do, not as ``unexpected
PermissionError ... this is a bug in phi3``. Core wraps its own file operations in
:func:`translate_os_errors`; :func:`describe_os_error` is the one place that words them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator

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


__all__ = ["FileSystemError", "describe_os_error", "os_errno_of", "translate_os_errors"]
