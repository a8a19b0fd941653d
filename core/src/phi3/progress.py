"""Progress display for long work (download, export, weight compression) in the CLI.

Backends call the :class:`phi3.types.Progress` callable with a stage message and, when they know
it, ``completed``/``total``. On a terminal, counted stages get a tqdm bar on stderr; elsewhere (CI
logs, pipes) each new stage is one line, so logs show where time went without bar debris.

Vendor libraries draw their own bars (transformers' "Loading weights", ...); the CLI silences those
through huggingface_hub's switch, which transformers reads at import, and phi3 turns bars back on
only around hub downloads, where they are the progress the user is waiting on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

QUIET_VENDOR_BARS = "HF_HUB_DISABLE_PROGRESS_BARS"


def silence_vendor_progress_bars() -> None:
    """Hide transformers/huggingface_hub bars and deprecation chatter unless the user asked for them.

    Both switches are read when transformers is imported, so setting them here (before any backend
    imports it) keeps phi3's own stage lines readable; ``--debug`` users can export them as they like.
    """
    os.environ.setdefault(QUIET_VENDOR_BARS, "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def download_progress_bars() -> Iterator[None]:
    """Show huggingface_hub's download bars (on a terminal) for the duration of a download."""
    from huggingface_hub import utils as hf_utils

    was_disabled = hf_utils.are_progress_bars_disabled()
    if sys.stderr.isatty():
        hf_utils.enable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            hf_utils.disable_progress_bars()


class CliProgress:
    """A :class:`phi3.types.Progress` that draws on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.interactive = sys.stderr.isatty()
        self._bar: Any = None
        self._last: str | None = None

    def __call__(self, message: str, completed: int | None = None, total: int | None = None) -> None:
        if not self.enabled:
            return
        if total is None or not self.interactive:
            if message != self._last:
                self.close()
                counted = f" ({completed}/{total})" if total is not None and completed is not None else ""
                click.echo(f"phi3: {message}{counted}", err=True)
                self._last = message
            return
        if self._bar is None or self._bar.total != total:
            self.close()
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=message, file=sys.stderr, leave=False, dynamic_ncols=True)
        self._bar.set_description_str(message)
        self._bar.n = completed or 0
        self._bar.refresh()
        self._last = message

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["CliProgress", "download_progress_bars", "silence_vendor_progress_bars"]
