"""``--adapter [NAME=]PATH`` and ``--use-adapter NAME`` for ``phi3 generate`` and ``phi3 chat``.

Each ``--adapter`` loads one LoRA adapter (a peft folder or a Hugging Face id) with the model; NAME
defaults to the folder's (or repo's) name. The adapter used is ``--use-adapter``'s, else the first one
given. Everything is checked here, before the model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from phi3.adapter_loading import NAME
from phi3.errors import AdapterError

F = TypeVar("F", bound=Callable[..., Any])


def adapter_options(func: F) -> F:
    """The two options, in the order ``--help`` shows them."""
    for option in reversed(
        (
            click.option(
                "--adapter",
                "adapters",
                multiple=True,
                metavar="[NAME=]PATH",
                help="Load a LoRA adapter (peft folder or hub id) with the model, repeatable; NAME defaults to "
                "the folder's name.",
            ),
            click.option(
                "--use-adapter",
                default=None,
                metavar="NAME",
                help="The loaded adapter to answer with (default: the first --adapter).",
            ),
        )
    ):
        func = option(func)
    return func


def _split(arg: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` -> (name, path)."""
    name, sep, path = arg.partition("=")
    if sep and NAME.match(name) and path and not Path(arg).expanduser().exists():
        return name, path
    default = Path(arg.rstrip("/\\")).name
    if not NAME.match(default):
        raise AdapterError(
            f"--adapter {arg}: {default!r} cannot be an adapter name",
            hint="name it: --adapter NAME=PATH (letters, digits, '.', '_', '-')",
        )
    return default, arg


def parse_adapter_args(args: Sequence[str], use: str | None) -> tuple[dict[str, str], str | None]:
    """The ``adapters=`` mapping for :func:`phi3.load` and the adapter to use (None: the base)."""
    adapters: dict[str, str] = {}
    for arg in args:
        name, path = _split(arg)
        if name in adapters:
            raise AdapterError(f"two --adapter options are named {name!r}", hint="name each one: --adapter NAME=PATH")
        adapters[name] = path
    if use is None:
        return adapters, next(iter(adapters), None)
    if use not in adapters:
        loaded = ", ".join(adapters) or "none"
        raise AdapterError(
            f"--use-adapter {use}: no --adapter is named {use!r} (given: {loaded})",
            hint="add --adapter NAME=PATH for it, or use one of the names given",
        )
    return adapters, use


__all__ = ["adapter_options", "parse_adapter_args"]
