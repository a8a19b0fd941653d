"""``phi3.load(..., adapters=...)``: adapters named, found, checked against the base, converted.

Everything cheap happens before the first slow step (quantization, loading): the names and paths are
checked, the backend must declare ``adapters``, each peft folder is read and checked against the
base's ``config.json`` (:func:`phi3.adapters.read_lora_adapter`). Only then is the artifact built and
each adapter converted by the backend's ``phi3_convert_adapter`` (cached by :mod:`phi3.adapter_cache`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3.adapter_cache import get_or_convert
from phi3.adapters import CONFIG_FILE, WEIGHTS_FILE, LoraAdapter, PreparedAdapter, mix_lora_adapters, read_lora_adapter
from phi3.cache import ArtifactCache
from phi3.errors import AdapterError, PluginError
from phi3.plugins import PluginRegistry
from phi3.selection import Selection
from phi3.types import Artifact, Progress

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""An adapter name: it appears on command lines and in the server's ``"model": "MODEL:NAME"``."""
_NAME_HINT = "use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)"
_SPEC_HINT = "pass a peft adapter folder (adapter_config.json + adapter_model.safetensors) or a hub id owner/name"


MixSpec = dict[str, float]
"""A weighted mix: component adapter name -> weight (``W + sum_i w_i B_i A_i``)."""
AdapterSpec = str | MixSpec
"""One value of ``adapters=`` once checked: a folder or hub id, or a mix of other adapters of the load."""
_TERM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:\*(-?(?:\d+\.?\d*|\.\d+)(?:[eE]-?\d+)?))?$")
_MIX_HINT = 'e.g. adapters={"a": DIR_A, "b": DIR_B, "ab": {"a": 0.7, "b": 0.3}} (CLI: --adapter ab=a*0.7+b*0.3)'


def parse_mix_text(text: str) -> MixSpec | None:
    """``"a*0.7+b*0.3"`` (``"a+b"``: weight 1 each) as ``{"a": 0.7, "b": 0.3}``; None when ``text`` is
    not written that way. A single name without ``*`` is not a mix (it is a folder or hub id), and
    text naming a path that exists is never a mix: the caller checks the filesystem first."""
    if "+" not in text and "*" not in text:
        return None
    mix: MixSpec = {}
    for term in text.strip().split("+"):
        match = _TERM.match(term.strip())
        if match is None:
            return None
        mix[match.group(1)] = mix.get(match.group(1), 0.0) + float(match.group(2) or 1)
    return mix


def _mix_or_path(name: str, spec: object) -> AdapterSpec:
    """One ``adapters=`` value: a path (text or PathLike), or a mix (a mapping, or text like ``a*0.7+b``)."""
    if isinstance(spec, Mapping):
        return _check_weights(name, spec)
    value = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(value, str) or not value.strip():
        raise AdapterError(f"adapter {name!r}: {spec!r} is not a folder or a hub id (nor a mix)", hint=_SPEC_HINT)
    if Path(value).expanduser().exists():
        return value
    mix = parse_mix_text(value)
    return value if mix is None else _check_weights(name, mix)


def _check_weights(name: str, spec: Mapping[Any, object]) -> MixSpec:
    """A mix's ``{name: weight}``: names, finite real weights, not all zero."""
    if not spec:
        raise AdapterError(f"adapter {name!r} is an empty mix", hint=_MIX_HINT)
    mix: MixSpec = {}
    for component, weight in spec.items():
        if not isinstance(component, str):
            raise AdapterError(f"adapter {name!r} mixes {component!r}, which is not an adapter name", hint=_MIX_HINT)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise AdapterError(
                f"adapter {name!r}: the weight of {component!r} is {weight!r}, not a finite number", hint=_MIX_HINT
            )
        mix[component] = float(weight)
    if not any(mix.values()):
        raise AdapterError(
            f"adapter {name!r}: every weight of the mix is 0, which is the base model",
            hint="give at least one component a non-zero weight, or use adapter=None for the base model",
        )
    return mix


def _check_mixes(specs: Mapping[str, AdapterSpec]) -> None:
    """Each mix names only plain adapters of the same load (no mix of mixes, no unknown names)."""
    plain = [name for name, spec in specs.items() if isinstance(spec, str)]
    for name, spec in specs.items():
        if isinstance(spec, str):
            continue
        for component in spec:
            if component in plain:
                continue
            if component in specs:
                raise AdapterError(
                    f"adapter {name!r} mixes {component!r}, which is itself a mix; a mix combines plain adapters",
                    hint=f"write out the weights of {component!r}'s components in {name!r}",
                )
            raise AdapterError(
                f"adapter {name!r} mixes {component!r}, which is not an adapter of this load "
                f"(plain adapters: {', '.join(plain) or 'none'})",
                hint=f"add {component!r} to adapters= (CLI: --adapter {component}=PATH); a folder named like a mix "
                "must exist",
            )


def check_adapter_specs(adapters: object) -> dict[str, AdapterSpec]:
    """``adapters`` as ``{name: folder or hub id, or mix}``, every name, value and mix checked (cheap:
    no adapter is read yet)."""
    if adapters is None:
        return {}
    if not isinstance(adapters, Mapping):
        raise AdapterError(
            f"adapters must map names to adapter folders or hub ids, got {type(adapters).__name__}",
            hint='e.g. adapters={"support": "./support-lora"}',
        )
    checked: dict[str, AdapterSpec] = {}
    for name, spec in adapters.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise AdapterError(f"{name!r} is not a valid adapter name", hint=_NAME_HINT)
        checked[name] = _mix_or_path(name, spec)
    _check_mixes(checked)
    return checked


def check_backend_applies_adapters(registry: PluginRegistry, selection: Selection) -> None:
    """AdapterError unless the chosen backend/engine declares ``adapters``, naming those that do."""
    engine = selection.engine
    if engine.adapters if engine.adapters is not None else selection.info.adapters:
        return
    able = [
        entry.name
        for entry in registry.entries()
        if entry.info is not None
        and any(e.adapters if e.adapters is not None else entry.info.adapters for e in entry.info.engines)
    ]
    raise AdapterError(
        f"backend {selection.backend!r} (engine {engine.name!r}) cannot apply LoRA adapters",
        hint=f"use a backend that can: {', '.join(able)}"
        if able
        else "no installed backend declares adapters (phi3 list-backends shows them); merge the adapter "
        "into the model with peft's merge_and_unload instead",
    )


def resolve_adapter(name: str, spec: str) -> Path:
    """The local peft folder of ``spec``: a folder, or a hub id downloaded (adapter files only)."""
    from phi3.sources import HUB_ID

    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or not HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        raise AdapterError(f"adapter {name!r}: no such adapter folder {spec}", hint=_SPEC_HINT)
    return _download(name, spec)


def _download(name: str, repo_id: str) -> Path:
    """An adapter repo from the Hugging Face hub (or its local cache), as phi3.sources fetches models."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    from phi3.progress import download_progress_bars

    local = f"download it on a connected machine (hf download {repo_id} --local-dir DIR) and pass DIR"
    try:
        with download_progress_bars():
            folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE])
    except hf_errors.LocalEntryNotFoundError:
        raise AdapterError(
            f"adapter {name!r}: {repo_id} is not in the local Hugging Face cache and the hub cannot be reached "
            "(or HF_HUB_OFFLINE is set)",
            hint=local,
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise AdapterError(
            f"adapter {name!r}: no repo {repo_id!r} on the Hugging Face hub (or it is private)",
            hint="check the id, or run `hf auth login` for a private repo",
        ) from None
    except (hf_errors.HfHubHTTPError, OSError) as exc:
        raise AdapterError(f"adapter {name!r}: downloading {repo_id} failed: {exc}", hint=local) from None
    return Path(folder)


def base_config(folders: list[Path]) -> dict[str, Any]:
    """The base checkpoint's config.json from the first of ``folders`` that has one."""
    for folder in folders:
        path = folder / "config.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return data
    raise AdapterError(
        f"cannot check adapters against {folders[0]}: it has no readable config.json",
        hint="load the original checkpoint (or the model id) instead of this artifact",
    )


def read_adapters(
    specs: Mapping[str, AdapterSpec], config: Mapping[str, Any], base_model_id: str | None
) -> dict[str, LoraAdapter]:
    """Every adapter found and checked against the base (AdapterError for the first bad one), then
    each mix built from them (:func:`phi3.adapters.mix_lora_adapters`), in the order given."""
    plain = {
        name: read_lora_adapter(name, resolve_adapter(name, spec), config, base_model_id=base_model_id)
        for name, spec in specs.items()
        if isinstance(spec, str)
    }
    return {
        name: plain[name]
        if isinstance(spec, str)
        else mix_lora_adapters(name, [(plain[component], weight) for component, weight in spec.items()])
        for name, spec in specs.items()
    }


def prepare_adapters(
    registry: PluginRegistry,
    cache: ArtifactCache,
    backend: str,
    artifact: Artifact,
    adapters: Mapping[str, LoraAdapter],
    progress: Progress,
) -> dict[str, PreparedAdapter]:
    """Each adapter converted for ``artifact`` by the backend (cached), or as is without the hook."""
    if not adapters or not registry.has_hook(backend, "phi3_convert_adapter"):
        return {name: PreparedAdapter(adapter, None, {}) for name, adapter in adapters.items()}
    prepared: dict[str, PreparedAdapter] = {}
    for name, adapter in adapters.items():

        def convert(folder: Path, adapter: LoraAdapter = adapter) -> Mapping[str, Any]:
            progress(f"converting adapter {adapter.name!r} for {backend}")
            extra = registry.call(
                backend,
                "phi3_convert_adapter",
                artifact=artifact,
                adapter=adapter,
                output_dir=folder,
                progress=progress,
            )
            if extra is not None and not isinstance(extra, Mapping):
                raise PluginError(f"backend {backend!r} returned {type(extra).__name__} from phi3_convert_adapter")
            return dict(extra or {})

        def waiting(adapter: LoraAdapter = adapter) -> None:
            progress(f"waiting for another phi3 process that is converting adapter {adapter.name!r}")

        path, manifest = get_or_convert(cache, backend, artifact.key, adapter.content_hash, convert, waiting)
        prepared[name] = PreparedAdapter(adapter, path, manifest)
    return prepared


__all__ = [
    "AdapterSpec",
    "MixSpec",
    "base_config",
    "check_adapter_specs",
    "check_backend_applies_adapters",
    "parse_mix_text",
    "prepare_adapters",
    "read_adapters",
    "resolve_adapter",
]
