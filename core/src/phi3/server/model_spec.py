"""What a request's ``model`` field means: ``MODEL[@BACKEND[:PRECISION[:DEVICE]]]``.

``MODEL`` is any phi3 model id (alias, hub id, checkpoint folder, artifact folder, ``smoke``). The
optional suffix picks how to run it; an empty or missing part takes the server's default (its
``-b/-p/-d`` options)::

    smoke                       server defaults
    smoke@openvino              backend openvino, default precision and device
    smoke@openvino:int8         ... at int8
    smoke@openvino::GPU         ... on GPU, default precision
    phi3-mini-4k@:fp16          default backend, fp16

The suffix is split at the last ``@`` only when the whole field is not an existing path, so a folder
whose name contains ``@`` still works. The device part is last and keeps its colons
(``AUTO:GPU,CPU``). The server's ``-e`` and ``-O`` options apply only to models run on the server's
own backend, since backend options mean nothing to another backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from phi3.server.errors import APIError


@dataclass(frozen=True)
class Defaults:
    """The server's ``-b/-d/-p/-e/-O`` options."""

    backend: str = "auto"
    device: str = "auto"
    precision: str | None = None
    engine: str | None = None
    options: tuple[tuple[str, object], ...] = ()
    adapters: tuple[tuple[str, str], ...] = ()
    """``phi3 serve --adapter``: ``(name, path)`` LoRA adapters of ``adapter_base``
    (:mod:`phi3.server.adapters`)."""
    adapter_base: str | None = None
    """The MODEL argument the adapters belong to (every backend/precision of it loads them)."""


@dataclass(frozen=True)
class ModelSpec:
    """A model id plus how to run it: the key models are loaded and shared under."""

    model: str
    backend: str
    device: str
    precision: str | None
    engine: str | None
    options: tuple[tuple[str, object], ...]
    adapters: tuple[tuple[str, str], ...] = ()
    """The LoRA adapters loaded with this base (all of them share it)."""

    @property
    def label(self) -> str:
        return f"{self.model}@{self.backend}:{self.precision or 'default'}:{self.device}"


def split(field: str) -> tuple[str, str | None]:
    """``(model, suffix)``; suffix None when the field has none."""
    if "@" not in field or Path(os.path.expanduser(field)).exists():
        return field, None
    model, _, suffix = field.rpartition("@")
    return model, suffix


def parse(field: str, defaults: Defaults) -> ModelSpec:
    """The spec a ``model`` field names; a 400 naming ``model`` when the suffix is malformed."""
    model, suffix = split(field.strip())
    if not model:
        raise APIError(400, f"model {field!r} names no model before '@'", param="model", code="invalid_value")
    backend, precision, device = "", "", ""
    if suffix is not None:
        backend, _, rest = suffix.partition(":")
        precision, _, device = rest.partition(":")
        if not (backend or precision or device):
            raise APIError(
                400,
                f"model {field!r} has an empty suffix; write MODEL@BACKEND[:PRECISION[:DEVICE]]",
                param="model",
                code="invalid_value",
            )
    own_backend = not backend or backend == defaults.backend
    return ModelSpec(
        model=model,
        backend=backend or defaults.backend,
        device=device or defaults.device,
        precision=precision or defaults.precision,
        engine=defaults.engine if own_backend else None,
        options=defaults.options if own_backend else (),
        adapters=defaults.adapters if model == defaults.adapter_base else (),
    )
