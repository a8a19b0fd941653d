"""LoRA adapters on the server: ``phi3 serve MODEL --adapter NAME=PATH`` and ``"model": "MODEL:NAME"``.

Every adapter belongs to the one MODEL the server was started with. It is loaded with that model
(:func:`phi3.load`'s ``adapters=``), so requests for different adapters share the loaded base, its
queue and its slots; a request picks one by naming ``MODEL:NAME`` (vLLM and Ollama clients already
send a plain model string, so the choice has to ride in it). ``MODEL:NAME`` may carry the usual
``@BACKEND[:PRECISION[:DEVICE]]`` suffix after it. :class:`AdaptedModel` hands the adapter to each
generation through :class:`phi3.GenerationConfig`'s ``adapter`` field, so the routes stay unaware of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.errors import ConfigError
from phi3.generation_config import GenerationConfig
from phi3.model import Model, TextStream
from phi3.server.errors import APIError
from phi3.server.model_spec import Defaults, split

FORBIDDEN_NAME_CHARS = ":@/\\ "
"""Characters an adapter name may not hold: they separate the parts of a request's ``model``."""


def parse_adapter_flags(values: Sequence[str], models: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--adapter [NAME=]PATH`` values as ``(name, path)`` pairs; a ConfigError naming the fix.

    NAME defaults to the folder's name. Adapters need exactly one MODEL: they are fine-tunes of one
    base, and a request names them relative to it.
    """
    if not values:
        return ()
    if len(dict.fromkeys(models)) != 1:
        raise ConfigError(
            f"--adapter needs exactly one MODEL argument (got {len(models)}): adapters are fine-tunes of one base",
            hint="e.g. phi3 serve phi3-mini-4k --adapter support=./support-lora",
        )
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = Path(value.rstrip("/\\")).name, value
        name, path = name.strip(), path.strip()
        if not path:
            raise ConfigError(f"--adapter {value!r} names no folder", hint="write --adapter NAME=PATH")
        bad = sorted({c for c in name if c in FORBIDDEN_NAME_CHARS})
        if not name or bad:
            raise ConfigError(
                f"--adapter {value!r}: the adapter name {name!r} "
                + (f"contains {' '.join(repr(c) for c in bad)}" if bad else "is empty"),
                hint="name it explicitly with letters, digits, '-', '_' or '.': --adapter NAME=PATH",
            )
        if name in pairs:
            raise ConfigError(f"--adapter {name!r} is given twice", hint="give each adapter its own NAME=")
        expanded = os.path.expanduser(path)
        pairs[name] = os.path.abspath(expanded) if os.path.exists(expanded) else path
    return tuple(pairs.items())


def split_adapter(field: str, defaults: Defaults) -> tuple[str, str | None]:
    """``(model field without the adapter, adapter name or None)`` for a request's ``model``.

    Only ``BASE:NAME`` where BASE is the model the adapters belong to names an adapter; any other
    colon is left alone (paths, ``@BACKEND:PRECISION`` suffixes). An unknown NAME on that base is a
    400 listing the adapters served.
    """
    if not defaults.adapters or defaults.adapter_base is None:
        return field, None
    stripped = field.strip()
    model, suffix = split(stripped)
    base, sep, name = model.rpartition(":")
    if not sep or base != defaults.adapter_base:
        return field, None
    names = [n for n, _ in defaults.adapters]
    if name not in names:
        raise APIError(
            400,
            f"model {field!r} names adapter {name!r}, which is not served; adapters of {base!r}: {', '.join(names)}",
            param="model",
            code="adapter_not_found",
        )
    return (base if suffix is None else f"{base}@{suffix}"), name


def adapter_ids(defaults: Defaults) -> list[tuple[str, str]]:
    """``(model id, parent)`` for ``/v1/models``: ``BASE:NAME`` for every adapter served."""
    if defaults.adapter_base is None:
        return []
    return [(f"{defaults.adapter_base}:{name}", defaults.adapter_base) for name, _ in defaults.adapters]


class AdaptedModel:
    """A loaded :class:`phi3.Model` whose every generation uses one adapter; anything else is the model's."""

    def __init__(self, model: Model, adapter: str) -> None:
        self._model = model
        self.adapter = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _with_adapter(self, config: GenerationConfig | Mapping[str, Any] | None) -> GenerationConfig:
        if isinstance(config, GenerationConfig):
            return config.replace(adapter=self.adapter)
        return GenerationConfig.from_options(**{**dict(config or {}), "adapter": self.adapter})

    def stream(self, prompt: str, config: GenerationConfig | Mapping[str, Any] | None = None) -> TextStream:
        return self._model.stream(prompt, self._with_adapter(config))

    def chat_stream(
        self, messages: Iterable[Any], config: GenerationConfig | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> TextStream:
        return self._model.chat_stream(list(messages), self._with_adapter(config), **kwargs)


__all__ = ["AdaptedModel", "adapter_ids", "parse_adapter_flags", "split_adapter"]
