"""The artifact cache key records the code that shapes an artifact: libraries and the plugin itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import phi3
from phi3.api import artifact_library_versions
from phi3.plugins import get_registry
from phi3.selection import Selection
from phi3.types import BackendInfo, BackendStatus, EngineInfo


def _selection(engine: EngineInfo) -> Selection:
    info = BackendInfo(
        name="reference",
        description="",
        engines=(engine,),
        devices=(),
        precisions=("fp32",),
        status=BackendStatus.AVAILABLE,
        library_versions={"openvino": "1.0", "torch": "2.0"},
    )
    return Selection("reference", info, engine, "cpu", "fp32", "")


def test_an_engine_with_its_own_libraries_is_keyed_by_them_alone() -> None:
    registry = get_registry()
    shared = artifact_library_versions(registry, _selection(EngineInfo("a")))
    own = artifact_library_versions(registry, _selection(EngineInfo("b", library_versions={"torch": "2.0"})))
    assert shared["openvino"] == "1.0" and "openvino" not in own and own["torch"] == "2.0"


def test_the_backend_distribution_version_is_in_the_key(tiny_phi3: Path, tmp_path: Path) -> None:
    entry = get_registry().entry("reference")
    if entry.distribution is None:
        pytest.skip("the reference backend is registered in-process here, not from its distribution")
    artifact = phi3.quantize(tiny_phi3, backend="reference", precision="fp32", output=tmp_path / "a")
    assert artifact.manifest["library_versions"][entry.distribution] == entry.version
