"""What to measure: the user's backend/engine/device lists expanded into targets, and why others cannot run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from phi3.errors import BackendNotFoundError, ConfigError
from phi3.plugins import PluginRegistry
from phi3.types import BackendStatus

# -- what to run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTarget:
    """One backend/engine/device combination to measure."""

    backend: str
    engine: str
    device: str = "auto"

    @property
    def label(self) -> str:
        device = "" if self.device == "auto" else f"@{self.device}"
        return f"{self.backend}/{self.engine}{device}"


@dataclass(frozen=True)
class Unavailable:
    """A requested target that cannot be measured here, and why."""

    backend: str
    engine: str | None
    device: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BenchSettings:
    """What every target is asked to do."""

    model: str
    precision: str | None = None
    prompt_tokens: int = 128
    new_tokens: int = 128
    runs: int = 5
    revision: str | None = None
    cold: bool = True
    """Also measure cold loads (one extra child per run and target)."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("prompt_tokens", "new_tokens", "runs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if self.prompt_tokens < 2 and not problems:
            problems.append("prompt-tokens must be at least 2 (the BOS token plus one token of text)")
        if self.new_tokens < 2 and not problems:
            problems.append("new-tokens must be at least 2 (decode speed needs a second token)")
        if problems:
            raise ConfigError("; ".join(problems))


def _split_list(values: Sequence[str] | str | None, what: str = "list") -> list[str]:
    """``a,b`` -> ``[a, b]``; a list that names nothing (``,,,`` or blanks) is refused, not read as "all"."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        out.extend(part.strip() for part in item.split(",") if part.strip())
    if items and not out:
        raise ConfigError(
            f"the {what} {','.join(items)!r} names nothing", hint="give names separated by commas, e.g. openvino,dml"
        )
    return list(dict.fromkeys(out))


def plan_targets(
    registry: PluginRegistry,
    backends: Sequence[str] | str | None = None,
    engines: Sequence[str] | str | None = None,
    devices: Sequence[str] | str | None = None,
) -> tuple[list[BenchTarget], list[Unavailable]]:
    """Expand the user's lists into targets; everything that cannot run is returned with why.

    ``backends``: names (default: every installed backend). ``engines``: engine names, either bare
    (applied to every backend that has an engine of that name) or ``backend:engine``; ``all``
    means every engine; default: each backend's default engine. ``devices``: device names tried on
    every backend (default ``auto``). Nothing requested is dropped silently.
    """
    names = _split_list(backends, "backend list") or registry.names()
    engine_names = _split_list(engines, "engine list")
    device_names = _split_list(devices, "device list") or ["auto"]
    targets: list[BenchTarget] = []
    missing: list[Unavailable] = []
    matched: set[str] = set()
    for name in names:
        try:
            entry = registry.entry(name)
        except BackendNotFoundError as exc:
            why = exc.message if name in registry.disabled else f"not installed ({exc.hint or exc.message})"
            missing.append(Unavailable(name, None, None, why))
            continue
        info = entry.info
        explicit_device = any(d.lower() != "auto" for d in device_names)
        if info is None or entry.status in (BackendStatus.BROKEN, BackendStatus.MISSING_DEPENDENCY):
            missing.append(Unavailable(name, None, None, f"{entry.status.value}: {entry.detail}"))
            continue
        if entry.status is BackendStatus.NO_DEVICE and not explicit_device:
            missing.append(
                Unavailable(
                    name,
                    None,
                    None,
                    f"no device: {entry.detail}".rstrip(": ") + " (pass --device to use an override device)",
                )
            )
            continue
        wanted: list[str] = []
        if not engine_names:
            default = info.default_engine
            if default is None:
                reasons = "; ".join(f"{e.name}: {e.detail}" for e in info.engines) or "it lists no engine"
                missing.append(Unavailable(name, None, None, f"no usable engine ({reasons})"))
                continue
            wanted = [default]
        else:
            for spec in engine_names:
                owner, sep, engine = spec.rpartition(":") if ":" in spec else spec.rpartition("/")
                if sep and owner != name:
                    continue
                if engine == "all":
                    wanted.extend(e.name for e in info.engines)
                    matched.add(spec)
                elif sep or info.engine(engine) is not None:
                    wanted.append(engine)
                    matched.add(spec)
            if not wanted:
                have = ", ".join(e.name for e in info.engines)
                missing.append(
                    Unavailable(name, None, None, f"has none of the engines {', '.join(engine_names)} (it has: {have})")
                )
                continue
        for engine in dict.fromkeys(wanted):
            engine_info = info.engine(engine)
            if engine_info is None:
                have = ", ".join(e.name for e in info.engines)
                missing.append(Unavailable(name, engine, None, f"no engine {engine!r} (it has: {have})"))
                continue
            if not engine_info.available:
                missing.append(Unavailable(name, engine, None, f"engine unusable: {engine_info.detail}"))
                continue
            targets.extend(BenchTarget(name, engine, device) for device in device_names)
    for spec in engine_names:
        if spec not in matched and not any(m.engine is None and "has none of the engines" in m.reason for m in missing):
            missing.append(Unavailable("-", spec, None, "no requested backend has an engine of this name"))
    return targets, missing
