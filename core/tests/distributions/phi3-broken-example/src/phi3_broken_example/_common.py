"""A complete, valid set of hooks that the broken variants start from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import phi3
from phi3 import BackendInfo, BackendStatus, DeviceInfo, EngineInfo


def info(name: str, api_version: int = phi3.PLUGIN_API_VERSION) -> BackendInfo:
    return BackendInfo(
        name=name,
        description="deliberately broken example",
        engines=(EngineInfo("only", artifact_format="broken-example"),),
        devices=(DeviceInfo("CPU", "cpu"),),
        precisions=("int4",),
        status=BackendStatus.AVAILABLE,
        api_version=api_version,
        priority=-1000,
    )


def quantize(output_dir: Path) -> dict[str, Any]:
    (output_dir / "weights.bin").write_bytes(b"\0" * 16)
    return {"context_length": 64}
