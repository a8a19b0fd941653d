"""Device names users type, and the execution provider each one means.

Names: ``cpu``; ``dml`` (the default DirectML adapter) and ``dml:N`` (adapter N, for multi-GPU
machines); ``cuda`` and ``cuda:N``. The name a session reports is the provider that really runs it.

Availability comes from the runtime itself (``og.is_dml_available()`` is reliable; a CPU-only build
answers False), never from guesses: asking for DirectML where it is missing is a
:class:`~phi3.errors.DeviceNotFoundError` that says what DirectML needs. The CPU provider is always
there and is never *appended* (onnxruntime-genai 0.13.1 rejects ``append_provider("cpu")``):
clearing the provider list is how the CPU provider is forced, including for a graph built for dml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from phi3 import probing
from phi3.errors import ConfigError, DeviceNotFoundError
from phi3.types import DeviceInfo

from phi3_dml import probe

DEVICE_PATTERN = re.compile(r"^(cpu|dml|cuda)(?::(\d+))?$")

INDEX_OPTION = {"dml": "device_index", "cuda": "device_id"}
"""The provider option that picks adapter N (onnxruntime-genai's DML option, CUDA EP's option)."""

ORT_EP_NAMES = {"dml": "DmlExecutionProvider", "cuda": "CUDAExecutionProvider"}

CUDA_REQUIREMENTS = "CUDA needs an NVIDIA GPU with its driver and the onnxruntime-genai-cuda package"


@dataclass(frozen=True)
class Device:
    """A parsed device name."""

    provider: str
    index: int | None = None

    @property
    def name(self) -> str:
        return self.provider if self.index is None else f"{self.provider}:{self.index}"


def parse_device(name: str) -> Device:
    """``"dml:1"`` -> Device("dml", 1). Case-insensitive; ``cpu:N`` is refused (there is one CPU)."""
    match = DEVICE_PATTERN.match(name.strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise DeviceNotFoundError(
            f"device {name!r} is not a dml backend device", hint="use cpu, dml, dml:N, cuda or cuda:N"
        )
    index = match.group(2)
    return Device(match.group(1), int(index) if index is not None else None)


def device_info(device: Device, description: str) -> DeviceInfo:
    return DeviceInfo(name=device.name, kind="cpu" if device.provider == "cpu" else "gpu", description=description)


def cheap_devices(installation: probe.Installation) -> list[DeviceInfo]:
    """Devices the probe reports without importing the runtime (GPU first, then cpu)."""
    devices = []
    gpu = installation.gpu_provider
    if gpu == "dml" and probing.is_windows():
        devices.append(device_info(Device("dml"), "DirectML, default DirectX 12 adapter"))
    elif gpu == "cuda" and probe.nvidia_gpu_present():
        devices.append(device_info(Device("cuda"), "CUDA, default GPU"))
    devices.append(device_info(Device("cpu"), "CPU execution provider"))
    return devices


def _ort_ep_devices(provider: str) -> list[Any]:
    """Adapters ONNX Runtime lists for ``provider`` (ORT >= 1.22), in enumeration order."""
    try:
        import onnxruntime

        listed = onnxruntime.get_ep_devices()
    except Exception:  # old ORT, or an EP library that cannot enumerate: fall back to the default adapter
        return []
    return [d for d in listed if getattr(d, "ep_name", "") == ORT_EP_NAMES[provider]]


def _describe(ep_device: Any) -> str:
    hardware = getattr(ep_device, "device", None)
    vendor = getattr(hardware, "vendor", "") or ""
    metadata = dict(getattr(hardware, "metadata", {}) or {})
    return " ".join(p for p in (vendor, metadata.get("Description", "")) if p).strip()


def _gpu_devices(provider: str, label: str) -> list[DeviceInfo]:
    devices = [device_info(Device(provider), f"{label}, default adapter")]
    for index, ep_device in enumerate(_ort_ep_devices(provider)):
        devices.append(device_info(Device(provider, index), f"{label} adapter {index} {_describe(ep_device)}".strip()))
    return devices


def runtime_devices(og: ModuleType) -> list[DeviceInfo]:
    """The devices the installed runtime really offers (what ``phi3 devices`` shows)."""
    devices: list[DeviceInfo] = []
    if og.is_dml_available():
        devices += _gpu_devices("dml", "DirectML")
    if og.is_cuda_available() and probe.nvidia_gpu_present():
        devices += _gpu_devices("cuda", "CUDA")
    devices.append(device_info(Device("cpu"), f"CPU execution provider (onnxruntime-genai {og.__version__})"))
    return devices


def why_missing(provider: str) -> str:
    return probe.DML_REQUIREMENTS if provider == "dml" else CUDA_REQUIREMENTS


def check_available(device: Device, og: ModuleType) -> None:
    """Raise DeviceNotFoundError, saying why, when the runtime lacks ``device``'s provider."""
    if device.provider == "cpu":
        return
    available = og.is_dml_available() if device.provider == "dml" else og.is_cuda_available()
    if not available:
        build = "DirectML" if device.provider == "dml" else "CUDA"
        raise DeviceNotFoundError(
            f"device {device.name!r}: the installed onnxruntime-genai {og.__version__} is not built with {build}",
            hint=f"{why_missing(device.provider)}; devices here: " + ", ".join(d.name for d in runtime_devices(og)),
        )


def check_artifact_target(device: Device, built_for: str | None, precision: str) -> None:
    """Refuse combinations that cannot work before the runtime fails on them obscurely.

    A graph built for dml or cuda runs under the CPU provider (checked), so ``cpu`` takes any
    artifact except bf16. A GPU provider needs a graph built for it: a cpu graph carries CPU-only
    choices (int4 accuracy level 4, no position_ids input, no DirectML provider settings) and was
    never checked on a GPU, so it is refused rather than left to fail in the driver.
    """
    if device.provider == "cpu":
        if precision == "bf16":
            raise ConfigError(
                "a bf16 artifact cannot run on the CPU provider (no bf16 kernels)",
                hint="load it on cuda, or quantize to fp16/fp32/int4 for cpu",
            )
        return
    if built_for is not None and built_for != device.provider:
        raise ConfigError(
            f"this artifact was built for execution_provider={built_for}; device {device.name} needs one built "
            f"for {device.provider}",
            hint=f"quantize with -O execution_provider={device.provider} (or run it with --device cpu)",
        )


def configure(config: Any, device: Device, provider_options: Mapping[str, str]) -> None:
    """Point an ``og.Config`` at ``device``: clear the artifact's provider list, add ours."""
    config.clear_providers()
    if device.provider == "cpu":
        if provider_options:
            raise ConfigError(
                "provider_options apply to dml and cuda devices, not to cpu",
                hint="drop provider_options or pick a GPU device",
            )
        return
    config.append_provider(device.provider)
    if device.index is not None:
        config.set_provider_option(device.provider, INDEX_OPTION[device.provider], str(device.index))
    for key, value in provider_options.items():
        config.set_provider_option(device.provider, str(key), str(value))


__all__ = [
    "Device",
    "cheap_devices",
    "check_artifact_target",
    "check_available",
    "configure",
    "parse_device",
    "runtime_devices",
    "why_missing",
]
