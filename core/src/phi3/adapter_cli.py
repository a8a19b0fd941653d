"""``--adapter [NAME=]PATH`` and ``--use-adapter NAME`` for ``phi3 generate`` and ``phi3 chat``.

Each ``--adapter`` loads one LoRA adapter (a peft folder or a Hugging Face id) with the model; NAME
defaults to the folder's (or repo's) name. ``--adapter NAME=A*0.7+B*0.3`` is a weighted mix of other
``--adapter`` names (``A+B``: weight 1 each; docs/adapters.md, "Weighted mixes"), unless a path of that
name exists, which stays a path. The adapter used is ``--use-adapter``'s, else the first one given.
Everything is checked here, before the model loads; the mix text itself is parsed by
:func:`phi3.adapter_loading.parse_mix_text`, which :func:`phi3.load` (and so ``phi3 serve``) also uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from phi3.adapter_loading import NAME, parse_mix_text
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
                "the folder's name. NAME=A*0.7+B*0.3 is a weighted mix of other --adapter names (A+B: weight 1 "
                "each); an existing path of that name stays a path.",
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


def _check_mix_args(adapters: dict[str, str]) -> None:
    """Each ``NAME=A*w+B*w`` mixes only other, plain ``--adapter`` names (a path that exists is a path)."""
    mixes = {
        name: mix
        for name, value in adapters.items()
        if not Path(value).expanduser().exists() and (mix := parse_mix_text(value)) is not None
    }
    for name, mix in mixes.items():
        for component in mix:
            if component in mixes:
                raise AdapterError(
                    f"--adapter {name}={adapters[name]}: {component!r} is itself a mix; a mix combines plain adapters",
                    hint=f"write out the weights of {component!r}'s components",
                )
            if component not in adapters:
                given = ", ".join(n for n in adapters if n not in mixes) or "none"
                raise AdapterError(
                    f"--adapter {name}={adapters[name]}: no --adapter is named {component!r} (given: {given}), "
                    "and no folder has that name",
                    hint=f"add --adapter {component}=PATH, or pass an existing adapter folder",
                )


def parse_adapter_args(args: Sequence[str], use: str | None) -> tuple[dict[str, str], str | None]:
    """The ``adapters=`` mapping for :func:`phi3.load` and the adapter to use (None: the base)."""
    adapters: dict[str, str] = {}
    for arg in args:
        name, path = _split(arg)
        if name in adapters:
            raise AdapterError(f"two --adapter options are named {name!r}", hint="name each one: --adapter NAME=PATH")
        adapters[name] = path
    _check_mix_args(adapters)
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
