"""Progress display for long work (download, export, weight compression) in the CLI.

Backends call the :class:`phi3.types.Progress` callable with a stage message and, when they know
it, ``completed``/``total``. Counted stages get a tqdm bar on stderr; plain stages a line, so CI
logs still show where time went.
"""

from __future__ import annotations

import sys
from typing import Any

import click


class CliProgress:
    """A :class:`phi3.types.Progress` that draws on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, message: str, completed: int | None = None, total: int | None = None) -> None:
        if not self.enabled:
            return
        if total is None:
            self.close()
            click.echo(f"phi3: {message}", err=True)
            return
        if self._bar is None or self._stage is None or self._bar.total != total:
            self.close()
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=message, file=sys.stderr, leave=False, dynamic_ncols=True)
        self._stage = message
        self._bar.set_description_str(message)
        self._bar.n = completed or 0
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


__all__ = ["CliProgress"]
