"""Choosing backend, engine and device, and splitting backend options, before any work starts.

``backend="auto"`` ranks every *available* backend by the best device it reports (NPU > GPU >
CPU) and says what it picked and why. Within the best device class, the backend that ``phi3 bench``
measured decoding fastest on this machine, for a model of this size, wins
(:mod:`phi3.speed_records`); without such a measurement the default order decides: the backend's
own ``priority`` (higher first), then its name. Nothing here falls back silently: a backend without
its device is an error that names the override, never a quiet switch to the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi3.errors import (
    BackendUnavailableError,
    ConfigError,
    DeviceNotFoundError,
    PrecisionNotSupportedError,
)
from phi3.options import validate_options
from phi3.plugins import BackendEntry, PluginRegistry
from phi3.speed_records import MeasuredSpeeds, SpeedRecord
from phi3.types import BackendInfo, BackendStatus, DeviceInfo, EngineInfo

KIND_RANK = {"npu": 3, "gpu": 2, "cpu": 1}


@dataclass(frozen=True)
class Selection:
    """What will run, and a sentence saying why (shown by the CLI, kept on ``Model``)."""

    backend: str
    info: BackendInfo
    engine: EngineInfo
    device: str
    precision: str
    reason: str


def _describe(entry: BackendEntry) -> str:
    return f"{entry.name}: {entry.status.value}" + (f" ({entry.detail})" if entry.detail else "")


def _best_device(info: BackendInfo) -> DeviceInfo | None:
    ranked = sorted(info.devices, key=lambda d: KIND_RANK.get(d.kind, 0), reverse=True)
    return ranked[0] if ranked else None


def _match_device(devices: tuple[DeviceInfo, ...] | list[DeviceInfo], wanted: str) -> DeviceInfo | None:
    for device in devices:
        if device.name.lower() == wanted.lower():
            return device
    return None


_Candidate = tuple[int, int, str, BackendEntry, DeviceInfo]


def _measured_rates(
    same_class: list[_Candidate], precision: str, measured: MeasuredSpeeds | None
) -> list[tuple[_Candidate, SpeedRecord]]:
    """The candidates of the best device class that phi3 bench measured, fastest first."""
    if measured is None:
        return []
    found: list[tuple[_Candidate, SpeedRecord]] = []
    for candidate in same_class:
        info = candidate[3].info
        engine = info.default_engine if info is not None else None
        record = measured.decode_rate(candidate[2], engine, candidate[4].kind, precision) if engine else None
        if record is not None:
            found.append((candidate, record))
    return sorted(found, key=lambda item: item[1].decode_tokens_per_s, reverse=True)


def _describe_record(record: SpeedRecord) -> str:
    return f"{record.backend} {record.decode_tokens_per_s:.1f} tok/s ({record.engine}, {record.date})"


def _pick_auto_backend(
    registry: PluginRegistry, precision: str, measured: MeasuredSpeeds | None = None
) -> tuple[BackendEntry, str]:
    entries = registry.entries()
    if not entries:
        raise BackendUnavailableError("no phi3 backend is installed", hint=registry.install_hint())
    ranked: list[_Candidate] = []
    for entry in entries:
        info = entry.info
        if info is None or entry.status is not BackendStatus.AVAILABLE or precision not in info.precisions:
            continue
        device = _best_device(info)
        if device is None or info.default_engine is None:
            continue
        ranked.append((KIND_RANK.get(device.kind, 0), info.priority, entry.name, entry, device))
    if not ranked:
        states = "; ".join(_describe(e) for e in entries)
        raise BackendUnavailableError(
            f"no installed backend can run precision {precision!r} here ({states})",
            hint="fix one of the backends above, or pass --backend/--device/--precision explicitly",
        )
    ranked.sort(key=lambda item: (item[0], item[1], item[2]), reverse=True)
    same_class = [c for c in ranked if c[0] == ranked[0][0]]
    why = "the best device found"
    if len(same_class) > 1:
        rates = _measured_rates(same_class, precision, measured)
        kind = same_class[0][4].kind
        if rates:
            chosen, record = rates[0]
            ranked.remove(chosen)
            ranked.insert(0, chosen)
            others = [_describe_record(r) for _, r in rates[1:]]
            why += (
                f"; fastest measured among the {kind} backends for {record.size_bucket} models by phi3 bench: "
                f"{_describe_record(record)}" + (f", vs {', '.join(others)}" if others else "")
            )
        else:
            bucket = measured.size_bucket if measured is not None else None
            order = " > ".join(c[2] for c in same_class)
            why += (
                f"; no phi3 bench measurement among the {kind} backends"
                + (f" for {bucket} models" if bucket else " (model size unknown)")
                + f", so the default order decided ({order}: plugin priority, then name)"
            )
    _, _, _, entry, device = ranked[0]
    others = [f"{r[3].name} ({r[4].name})" for r in ranked[1:]]
    reason = f"auto: picked backend {entry.name} on {device.name} ({device.kind}, {why})"
    if others:
        reason += f"; also usable: {', '.join(others)}"
    skipped = [e.name for e in entries if e.name not in {r[3].name for r in ranked}]
    if skipped:
        reason += f"; not usable: {', '.join(skipped)} (see phi3 list-backends)"
    return entry, reason


def _resolve_device(registry: PluginRegistry, entry: BackendEntry, info: BackendInfo, device: str) -> tuple[str, str]:
    if device.lower() == "auto":
        if entry.status is BackendStatus.NO_DEVICE:
            overrides = ", ".join(d.name for d in info.override_devices)
            hint = f"pass --device {info.override_devices[0].name} to run on it explicitly" if overrides else None
            raise BackendUnavailableError(f"backend {entry.name}: {info.detail or 'no device'}", hint=hint)
        best = _best_device(info)
        if best is None:
            raise BackendUnavailableError(f"backend {entry.name} reports no device", hint=info.detail or None)
        return best.name, f"device auto: {best.name} ({best.kind}, the best {entry.name} reports)"
    found = _match_device(info.devices, device) or _match_device(info.override_devices, device)
    if found is None and registry.has_hook(entry.name, "phi3_devices"):
        # The cheap probe may not enumerate everything (GPU.1, AUTO ...): ask the runtime.
        deep = registry.call(entry.name, "phi3_devices") or []
        found = _match_device(list(deep), device)
        known = [d.name for d in deep] + [d.name for d in info.override_devices]
    else:
        known = [d.name for d in (*info.devices, *info.override_devices)]
    if found is None and registry.has_hook(entry.name, "phi3_resolve_device"):
        found = registry.call(entry.name, "phi3_resolve_device", name=device)
    if found is None:
        hint = f"devices present: {', '.join(dict.fromkeys(known)) or 'none'}"
        raise DeviceNotFoundError(
            f"device {device!r} is not available to backend {entry.name}",
            hint=hint + (f"; {info.detail}" if info.detail else ""),
        )
    if found in info.override_devices and found not in info.devices:
        return found.name, f"device {found.name} (explicit override: {info.detail or 'not the default device'})"
    return found.name, f"device {found.name} (requested)"


def _resolve_engine(entry: BackendEntry, info: BackendInfo, engine: str | None) -> EngineInfo:
    if engine is None:
        name = info.default_engine
        if name is None:
            details = "; ".join(f"{e.name}: {e.detail}" for e in info.engines) or "it declares none"
            raise BackendUnavailableError(f"backend {entry.name} has no usable engine ({details})")
        engine = name
    found = info.engine(engine)
    if found is None:
        raise ConfigError(
            f"backend {entry.name} has no engine {engine!r}", hint=f"engines: {', '.join(e.name for e in info.engines)}"
        )
    if not found.available:
        raise BackendUnavailableError(f"engine {engine!r} of backend {entry.name} is not usable here: {found.detail}")
    return found


def select(
    registry: PluginRegistry,
    backend: str,
    device: str | None,
    precision: str,
    engine: str | None,
    measured: MeasuredSpeeds | None = None,
) -> Selection:
    """Validate and resolve the user's backend/device/precision/engine choice.

    ``device=None`` skips device resolution: quantizing needs no device (an NPU artifact can be
    built on a machine without an NPU). ``measured``: the decode rates ``phi3 bench`` saved for
    this model's size, consulted by ``backend="auto"`` within the best device class.
    """
    reasons = []
    if backend.lower() == "auto":
        entry, reason = _pick_auto_backend(registry, precision, measured)
        reasons.append(reason)
    else:
        entry = registry.entry(backend)
    info = entry.info
    if info is None:
        raise BackendUnavailableError(
            f"backend {entry.name} is broken: {entry.error}",
            hint=f"reinstall or uninstall {entry.distribution or entry.name}",
        )
    if entry.status is BackendStatus.MISSING_DEPENDENCY:
        raise BackendUnavailableError(f"backend {entry.name} is missing a dependency: {info.detail}")
    if precision not in info.precisions:
        raise PrecisionNotSupportedError(
            f"backend {entry.name} does not offer precision {precision!r}",
            hint=f"it offers: {', '.join(info.precisions)}",
        )
    device_name, device_reason = ("", "") if device is None else _resolve_device(registry, entry, info, device)
    if backend.lower() != "auto" and device_reason:
        reasons.append(device_reason)
    engine_info = _resolve_engine(entry, info, engine)
    return Selection(entry.name, info, engine_info, device_name, precision, "; ".join(reasons))


def split_options(
    info: BackendInfo, options: Mapping[str, Any], engine: str | None = None, precision: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split backend options into (artifact-shaping, load-time), checked against the backend's
    option specs (:func:`phi3.options.validate_options`); refuse unknown names."""
    checked = validate_options(info, options, engine, precision)
    artifact = {k: v for k, v in checked.items() if k in info.artifact_options}
    load = {k: v for k, v in checked.items() if k in info.load_options}
    return artifact, load


__all__ = ["KIND_RANK", "Selection", "select", "split_options"]
