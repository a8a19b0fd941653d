"""The cheap probe, the runtime's device list, and the CLI a user types (run for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import phi3
import pytest
from phi3 import probing
from phi3.plugins import get_registry
from phi3.types import BackendStatus

from phi3_dml import plugin, probe, providers


def test_probe_reports_the_cpu_provider_and_why_directml_is_absent() -> None:
    info = get_registry().entry("dml").info
    assert info is not None and info.status is BackendStatus.AVAILABLE
    assert [d.name for d in info.devices] == ["cpu"]
    assert "provider cpu (onnxruntime-genai " in info.detail
    assert "DirectML absent" in info.detail and "DirectX 12" in info.detail
    assert info.library_versions["onnxruntime-genai"] == probing.distribution_version("onnxruntime-genai")
    for builder_dependency in ("onnxruntime", "onnx", "onnx-ir", "transformers", "torch"):
        assert builder_dependency in info.library_versions, "builder versions key the cache"
    assert info.artifact_options == ("execution_provider", "block_size", "accuracy_level", "lm_head")
    assert info.precisions[0] == "int4"


def test_probe_without_the_runtime_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    real = probing.installed_versions
    monkeypatch.setattr(
        probing,
        "installed_versions",
        lambda *names: {k: v for k, v in real(*names).items() if not k.startswith("onnxruntime-genai")},
    )
    info = plugin.phi3_backend_info()
    assert info.status is BackendStatus.MISSING_DEPENDENCY
    assert "pip install onnxruntime-genai" in info.detail


def test_default_target_follows_the_installed_build() -> None:
    assert probe.Installation({"onnxruntime-genai": "0.18.0"}).default_execution_provider() == "cpu"
    directml = probe.Installation({"onnxruntime-genai-directml": "0.13.1"})
    assert directml.default_execution_provider() == "dml" and directml.gpu_provider == "dml"
    both = probe.Installation({"onnxruntime-genai": "0.18.0", "onnxruntime-genai-cuda": "0.18.0"})
    assert both.default_execution_provider() == "cuda" and both.conflict


def test_runtime_devices_here() -> None:
    assert [d.name for d in plugin.phi3_devices()] == ["cpu"]


class FakeRuntime:
    """Stands in for onnxruntime_genai where a GPU build would be installed."""

    __version__ = "0.13.1"

    def __init__(self, dml: bool) -> None:
        self._dml = dml

    def is_dml_available(self) -> bool:
        return self._dml

    def is_cuda_available(self) -> bool:
        return False


class FakeConfig:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def clear_providers(self) -> None:
        self.calls.append(("clear",))

    def append_provider(self, name: str) -> None:
        self.calls.append(("append", name))

    def set_provider_option(self, provider: str, key: str, value: str) -> None:
        self.calls.append(("option", provider, key, value))


def test_dml_devices_and_provider_configuration_with_a_directml_runtime() -> None:
    runtime: Any = FakeRuntime(dml=True)
    names = [d.name for d in providers.runtime_devices(runtime)]
    assert names[0] == "dml" and names[-1] == "cpu"
    providers.check_available(providers.parse_device("DML:1"), runtime)
    config = FakeConfig()
    providers.configure(config, providers.parse_device("dml:1"), {"enable_graph_capture": "0"})
    assert config.calls == [
        ("clear",),
        ("append", "dml"),
        ("option", "dml", "device_index", "1"),
        ("option", "dml", "enable_graph_capture", "0"),
    ]
    forced_cpu = FakeConfig()
    providers.configure(forced_cpu, providers.parse_device("cpu"), {})
    assert forced_cpu.calls == [("clear",)], "cpu is forced by clearing, never appended (0.13.1 rejects it)"
    with pytest.raises(phi3.DeviceNotFoundError, match="not built with DirectML"):
        providers.check_available(providers.parse_device("dml"), FakeRuntime(dml=False))


def test_cli_quantize_generate_and_list_backends(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3("quantize", str(tiny_phi3), "-b", "dml", "-p", "int4")
    assert done.returncode == 0, done.stderr
    assert "artifact" in done.stdout
    done = run_phi3("generate", str(tiny_phi3), "Hi", "-b", "dml", "-n", "8", "--ignore-eos", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backend"] == "dml" and result["device"] == "cpu" and result["new_tokens"] == 8
    done = run_phi3("list-backends", "--json")
    assert done.returncode == 0, done.stderr
    dml = {b["name"]: b for b in json.loads(done.stdout)["backends"]}["dml"]
    assert dml["status"] == "available" and [d["name"] for d in dml["devices"]] == ["cpu"]
    assert "DirectML absent" in dml["detail"]
    done = run_phi3("list-backends")
    assert done.returncode == 0 and "dml" in done.stdout and "available" in done.stdout


def test_cli_errors_are_one_line_without_traceback(run_phi3: Any, tiny_phi3: Path) -> None:
    done = run_phi3("quantize", str(tiny_phi3), "-b", "dml", "-p", "fp32", "-O", "execution_provider=dml")
    assert done.returncode == 1
    assert "fp32 cannot be built for execution_provider=dml" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_phi3("generate", str(tiny_phi3), "Hi", "-b", "dml", "-d", "dml")
    assert done.returncode == 1 and "dml" in done.stderr and "Traceback" not in done.stderr
