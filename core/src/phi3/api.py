"""The public entry points: :func:`load` and :func:`quantize`.

Both follow the same path: pick backend/engine/device (:mod:`phi3.selection`), resolve the model
(:mod:`phi3.sources`), get the artifact from the cache or build it (:mod:`phi3.cache`), and for
``load`` open a session (``phi3_load``). Everything the user can get wrong is checked before the
first slow step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi3 import adapter_loading
from phi3.adapters import LoraAdapter
from phi3.cache import ArtifactCache, ArtifactSpec, is_artifact, read_artifact
from phi3.checkpoint import check_checkpoint
from phi3.errors import ConfigError, ModelNotFoundError, PluginError
from phi3.model import Model
from phi3.plugins import PluginRegistry, get_registry
from phi3.selection import Selection, select, split_options
from phi3.sources import resolve_model
from phi3.speed_records import MeasuredSpeeds
from phi3.types import Artifact, LoadRequest, ModelSource, Progress, QuantizeRequest, SessionHandle

log = logging.getLogger("phi3")


def _quiet_progress(message: str, completed: int | None = None, total: int | None = None) -> None:
    log.debug("progress: %s %s/%s", message, completed, total)


MAX_MODEL_ID_CHARS = 1024
"""Longer than any path or hub id (the hub allows 96 characters): refused before the file system sees it."""


def _local_path(model: str) -> Path:
    """``model`` as a local path, ``~`` expanded; a ModelNotFoundError naming the problem when the file
    system cannot even look it up (an unknown user's ``~``, a name too long for a path)."""
    if len(model) > MAX_MODEL_ID_CHARS:
        raise ModelNotFoundError(
            f"the model id is {len(model)} characters long; a path or Hugging Face id is far shorter",
            hint="pass a catalogue alias such as phi3-mini-4k, a hub id such as microsoft/Phi-3-mini-4k-instruct, "
            "or a local folder",
        )
    try:
        path = Path(model).expanduser()
        path.is_dir()
    except RuntimeError:  # Path.expanduser: "Could not determine home directory"
        user = model.split("/", 1)[0]
        raise ModelNotFoundError(
            f"{model}: {user} names no user of this machine, so the path cannot be expanded",
            hint="give the folder's full path",
        ) from None
    except OSError as exc:  # ENAMETOOLONG and the like
        raise ModelNotFoundError(
            f"{model[:80]}{'...' if len(model) > 80 else ''} cannot be a local folder: {exc.strerror}",
            hint="pass a catalogue alias, a hub id or an existing folder",
        ) from None
    return path


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _check_model(model: object) -> str | os.PathLike[str]:
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise ConfigError(
            f"model must be a string or a path, got {type(model).__name__} {model!r}",
            hint="pass an alias (phi3-mini-4k), a Hugging Face id, or a folder",
        )
    if not model.strip():
        raise ConfigError(
            "the model argument is empty", hint="pass an alias (phi3-mini-4k), a Hugging Face id, or a folder"
        )
    return model


def _check_progress(progress: object) -> Progress | None:
    if progress is not None and not callable(progress):
        raise ConfigError(f"progress must be a callable or None, got {type(progress).__name__}")
    return progress  # type: ignore[return-value]


def _check_output(output: object) -> Path | None:
    if output is None:
        return None
    if not isinstance(output, (str, os.PathLike)):
        raise ConfigError(f"output must be a folder path, got {type(output).__name__} {output!r}")
    text = os.fspath(output)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the output folder name is empty", hint="name a new folder, e.g. -o ./phi3-int4")
    return Path(text)


def _prepare(
    model: str | os.PathLike[str],
    backend: str,
    device: str | None,
    precision: str | None,
    engine: str | None,
    revision: str | None,
    options: Mapping[str, Any],
    registry: PluginRegistry,
    cache: ArtifactCache,
) -> tuple[Selection, dict[str, Any], dict[str, Any], Artifact | None, str]:
    """Resolve everything cheap; return the selection, split options and a prebuilt artifact, if any."""
    model_path = _local_path(os.fspath(model))
    prebuilt: Artifact | None = None
    if precision is not None:
        _check_text("precision", precision)
    if engine is not None:
        _check_text("engine", engine)
    if model_path.is_dir() and is_artifact(model_path):
        prebuilt = read_artifact(model_path.resolve(), from_cache=True)
        if backend == "auto":
            backend = prebuilt.backend
        elif backend != prebuilt.backend:
            raise ConfigError(
                f"{model_path} is an artifact of backend {prebuilt.backend!r}, not {backend!r}",
                hint=f"pass --backend {prebuilt.backend} or the original model instead",
            )
        if precision is not None and precision != prebuilt.precision:
            raise ConfigError(f"{model_path} is a {prebuilt.precision} artifact, not {precision}")
        precision = prebuilt.precision
        if engine is None and isinstance(prebuilt.manifest.get("engine"), str):
            engine = prebuilt.manifest["engine"]  # the engine it was built for, unless told otherwise
    precision = precision or "int4"
    for name, value in (("backend", backend), ("precision", precision)):
        _check_text(name, value)
    if device is not None:
        _check_text("device", device)
    # auto within a device class prefers what `phi3 bench` measured fastest for a model of this size
    measured = MeasuredSpeeds.for_model(model, revision) if backend.lower() == "auto" else None
    selection = select(registry, backend, device, precision, engine, measured)
    if prebuilt is not None and prebuilt.artifact_format != selection.engine.artifact_format:
        raise ConfigError(
            f"{model_path} holds a {prebuilt.artifact_format!r} artifact; engine "
            f"{selection.engine.name!r} needs {selection.engine.artifact_format!r}"
        )
    artifact_opts, load_opts = split_options(selection.info, options, selection.engine.name, precision)
    if prebuilt is not None and artifact_opts:
        raise ConfigError(
            f"{', '.join(sorted(artifact_opts))} shape(s) how an artifact is built, and {model_path} is built already",
            hint="drop those options, or pass the original checkpoint to build a new artifact",
        )
    return selection, artifact_opts, load_opts, prebuilt, precision


def artifact_library_versions(registry: PluginRegistry, selection: Selection) -> dict[str, str]:
    """What the cache key records of the code that shapes an artifact.

    The engine's own library versions when it declares them (else the backend's), plus the
    backend distribution's version from its entry point, so a plugin upgrade re-quantizes.
    """
    engine_versions = selection.engine.library_versions
    versions = dict(engine_versions if engine_versions is not None else selection.info.library_versions)
    entry = registry.entry(selection.backend)
    if entry.distribution and entry.version:
        versions.setdefault(entry.distribution, entry.version)
    return versions


def _build_artifact(
    registry: PluginRegistry,
    cache: ArtifactCache,
    selection: Selection,
    model: str | os.PathLike[str],
    revision: str | None,
    artifact_opts: dict[str, Any],
    progress: Progress,
    output: Path | None,
    trust_remote_code: bool,
    overwrite: bool = False,
    source: ModelSource | None = None,
) -> Artifact:
    source = source or resolve_model(model, cache.root, revision)
    spec = ArtifactSpec(
        backend=selection.backend,
        source=source,
        precision=selection.precision,
        artifact_format=selection.engine.artifact_format,
        options=artifact_opts,
        library_versions=artifact_library_versions(registry, selection),
    )
    request = QuantizeRequest(
        source=source,
        precision=selection.precision,
        engine=selection.engine.name,
        options=artifact_opts,
        trust_remote_code=trust_remote_code,
    )

    def build(folder: Path) -> Mapping[str, Any]:
        report = check_checkpoint(source.path)  # cheap: headers only; refuses what would build a broken artifact
        if not report.has_chat_template:
            progress(f"note: {source.model_id} has no chat template; chat needs one, raw prompts work")
        progress(f"quantizing {source.model_id} to {selection.precision} for {selection.backend}")
        extra = registry.call(selection.backend, "phi3_quantize", request=request, output_dir=folder, progress=progress)
        if extra is not None and not isinstance(extra, Mapping):
            raise PluginError(f"backend {selection.backend!r} returned {type(extra).__name__} from phi3_quantize")
        return {"engine": selection.engine.name, "has_chat_template": report.has_chat_template, **(extra or {})}

    def waiting() -> None:
        progress("waiting for another phi3 process that is building the same artifact")

    if output is not None:
        return cache.build_to(spec, build, output, overwrite=overwrite)
    return cache.get_or_build(spec, build, on_wait=waiting)


def _read_adapters(
    registry: PluginRegistry,
    cache: ArtifactCache,
    selection: Selection,
    model: str | os.PathLike[str],
    revision: str | None,
    prebuilt: Artifact | None,
    specs: Mapping[str, adapter_loading.AdapterSpec],
) -> tuple[ModelSource | None, dict[str, LoraAdapter]]:
    """The adapters checked against the base's config.json (the source's, or a prebuilt artifact's),
    and the resolved source when it had to be resolved for that (so it is resolved once)."""
    if not specs:
        return None, {}
    adapter_loading.check_backend_applies_adapters(registry, selection)
    if prebuilt is None:
        source = resolve_model(model, cache.root, revision)
        config = adapter_loading.base_config([source.path])
        return source, adapter_loading.read_adapters(specs, config, source.model_id)
    origin = prebuilt.manifest.get("source")
    model_id = origin.get("model_id") if isinstance(origin, Mapping) else None
    folders = [prebuilt.path] + ([Path(model_id)] if isinstance(model_id, str) and Path(model_id).is_dir() else [])
    config = adapter_loading.base_config(folders)
    return None, adapter_loading.read_adapters(specs, config, model_id if isinstance(model_id, str) else None)


def load(
    model: str | os.PathLike[str],
    backend: str = "auto",
    device: str = "auto",
    precision: str | None = None,
    *,
    engine: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
    adapters: Mapping[str, str | os.PathLike[str] | Mapping[str, float]] | None = None,
    **backend_options: Any,
) -> Model:
    """Load a Phi-3 model on a backend, quantizing it into the cache first if needed.

    ``model`` is a catalogue alias (``phi3-mini-4k``), a Hugging Face id, a local checkpoint folder,
    an artifact folder written by :func:`quantize`, or ``"smoke"`` (the built-in tiny model).
    ``precision`` defaults to ``int4`` (or the artifact's own). ``backend_options`` are passed to
    the backend; names it does not declare are refused. The returned model says what was picked:
    ``model.backend``, ``model.engine``, ``model.device`` and ``model.selection_reason``.

    ``adapters`` maps names to LoRA adapters (peft folders or Hugging Face ids) for backends that
    declare ``adapters``: each is checked against the base before anything slow, converted once for
    the backend (cached), and picked per generation with ``generate(..., adapter=NAME)``. A value
    may instead be a weighted mix of other (plain) adapters of the same call, ``{"a": 0.7, "b": 0.3}``
    or the text ``"a*0.7+b*0.3"`` (a path that exists is a path): it is applied exactly, as one LoRA
    of the summed rank, on every backend that applies adapters (docs/adapters.md, "Weighted mixes").
    """
    model = _check_model(model)
    progress = _check_progress(progress) or _quiet_progress
    specs = adapter_loading.check_adapter_specs(adapters)
    registry = get_registry()
    cache = ArtifactCache()
    cache.ensure_usable(writable=False)
    selection, artifact_opts, load_opts, artifact, _ = _prepare(
        model, backend, device, precision, engine, revision, backend_options, registry, cache
    )
    if selection.reason:
        log.info("%s", selection.reason)
    source, lora = _read_adapters(registry, cache, selection, model, revision, artifact, specs)
    if artifact is None:
        artifact = _build_artifact(
            registry, cache, selection, model, revision, artifact_opts, progress, None, trust_remote_code, source=source
        )
    prepared = adapter_loading.prepare_adapters(registry, cache, selection.backend, artifact, lora, progress)
    progress(f"loading on {selection.backend}/{selection.engine.name} ({selection.device})")
    request = LoadRequest(
        artifact=artifact,
        engine=selection.engine.name,
        device=selection.device,
        options=load_opts,
        cache_dir=cache.compiled_dir(selection.backend),
        adapters=prepared,
    )
    session = registry.call(selection.backend, "phi3_load", request=request)
    if not isinstance(session, SessionHandle):
        raise PluginError(
            f"backend {selection.backend!r} returned {type(session).__name__} from phi3_load, not phi3.SessionHandle"
        )
    return Model(registry, session, artifact, selection, adapters=tuple(prepared))


def quantize(
    model: str | os.PathLike[str],
    backend: str = "auto",
    precision: str | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    engine: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
    **backend_options: Any,
) -> Artifact:
    """Build (or find in the cache) the artifact ``load`` would use, optionally into ``output``.

    With ``output`` the artifact is written there (atomically) instead of the cache; load it later
    with ``phi3.load(output)``. ``output`` must not exist yet, or be a phi3 artifact and
    ``overwrite=True``: phi3 never removes or replaces a folder it did not write.
    """
    model = _check_model(model)
    out = _check_output(output)
    progress = _check_progress(progress) or _quiet_progress
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be True or False, got {overwrite!r}")
    registry = get_registry()
    cache = ArtifactCache()
    cache.ensure_usable(writable=False)
    selection, artifact_opts, _, prebuilt, _ = _prepare(
        model, backend, None, precision, engine, revision, backend_options, registry, cache
    )
    if prebuilt is not None:
        raise ConfigError(f"{model} is already a quantized artifact")
    return _build_artifact(
        registry, cache, selection, model, revision, artifact_opts, progress, out, trust_remote_code, overwrite
    )


__all__ = ["load", "quantize"]
