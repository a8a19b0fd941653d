"""llama.cpp's own log lines, kept off the user's terminal while phi3 calls into it.

llama.cpp logs every tensor it quantizes (a few hundred lines for a real Phi-3), its loader's metadata and
per-tensor warnings (loading a LoRA on a repacked Q4_0 base). phi3 reports its own progress instead, and
puts the last line llama.cpp logged into the error when a call fails. Both routes are caught:
Python's ``sys.stderr`` (llama-cpp-python's log callback prints there) and file descriptor 2
(ggml's own prints), as ``Llama(verbose=False)`` silences its own loading.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def captured() -> Iterator[Callable[[], str]]:
    """Everything written to stderr inside the block goes to buffers; yields a function returning it."""
    sys.stderr.flush()
    saved = os.dup(2)
    text = io.StringIO()
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stderr(text):
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: text.getvalue() + (sink.seek(0), sink.read().decode("utf-8", "replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def last_line(log: str) -> str | None:
    """The last non-blank line of a captured log (None when llama.cpp logged nothing)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else None
