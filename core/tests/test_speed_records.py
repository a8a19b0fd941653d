"""backend="auto" within a device class: the fastest backend `phi3 bench` measured, else the default order.

Two real CPU backends take part: the reference backend (priority -100) and ``twin``, the same
transformers implementation registered under another name with a higher priority (0), so the
default order picks ``twin`` and only a measurement can make auto pick ``reference``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3 import BackendInfo, DeviceInfo, hookimpl, plugins
from phi3.selection import select
from phi3.speed_records import (
    SCHEMA_VERSION,
    MeasuredSpeeds,
    SpeedRecord,
    SpeedRecordWarning,
    load_records,
    model_size_bucket,
    parameter_count,
    records_path,
    save_records,
    size_bucket,
)
from phi3.testing import reference_backend

PHI3_MINI = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
}
PHI3_MEDIUM = {
    "hidden_size": 5120,
    "intermediate_size": 17920,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 10,
    "vocab_size": 32064,
}


class _Twin:
    """The reference backend under another name and a higher priority: a second real CPU backend."""

    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        return dataclasses.replace(reference_backend.phi3_backend_info(), name="twin", priority=0)

    @hookimpl
    def phi3_quantize(self, request: Any, output_dir: Path, progress: Any) -> Any:
        return reference_backend.phi3_quantize(request, output_dir, progress)

    @hookimpl
    def phi3_load(self, request: Any) -> Any:
        return reference_backend.phi3_load(request)

    @hookimpl
    def phi3_generate(self, session: Any, prompt: str, config: Any) -> Any:
        return reference_backend.phi3_generate(session, prompt, config)

    @hookimpl
    def phi3_apply_chat_template(self, session: Any, messages: Any) -> str:
        return reference_backend.phi3_apply_chat_template(session, messages)


class _Gpu(_Twin):
    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        info = reference_backend.phi3_backend_info()
        return dataclasses.replace(info, name="gpu_one", priority=-500, devices=(DeviceInfo("GPU.0", "gpu"),))


def _record(
    backend: str, rate: float, bucket: str = "1B-5B", precision: str = "fp32", kind: str = "cpu"
) -> SpeedRecord:
    return SpeedRecord(backend, "transformers", "cpu", kind, precision, bucket, rate, "2026-11-30T01:02:03+00:00", "m")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PHI3_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def two_cpu_backends(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Exactly reference + twin (+ gpu_one when a test adds it), whatever else is installed."""
    monkeypatch.setenv("PHI3_LOAD_PLUGINS", "reference,twin,gpu_one")
    plugins.reset_registry()
    registry = plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    registry.register(_Twin(), "twin")
    assert sorted(registry.names()) == ["reference", "twin"]
    return registry


# -- model size -------------------------------------------------------------------------------


def test_parameter_count_and_buckets() -> None:
    assert 3.7e9 < parameter_count(PHI3_MINI) < 3.9e9  # Phi-3-mini is 3.82B
    assert 13.5e9 < parameter_count(PHI3_MEDIUM) < 14.5e9  # Phi-3-medium, GQA: 14B
    tied = parameter_count({**PHI3_MINI, "tie_word_embeddings": True})
    assert parameter_count(PHI3_MINI) - tied == 32064 * 3072
    assert [size_bucket(n) for n in (2e6, 0.99e9, 1e9, 3.8e9, 14e9, 70e9)] == [
        "under-1B",
        "under-1B",
        "1B-5B",
        "1B-5B",
        "5B-20B",
        "over-20B",
    ]


def test_model_size_bucket_of_folders_aliases_and_unknowns(tmp_path: Path, tiny_phi3: Path) -> None:
    assert model_size_bucket(tiny_phi3) == "under-1B"
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(PHI3_MINI))
    assert model_size_bucket(folder) == "1B-5B"
    assert model_size_bucket("phi3-medium-4k") == "5B-20B"  # catalogue, nothing downloaded
    assert model_size_bucket("smoke") == "under-1B"
    assert model_size_bucket("someone/not-cached-anywhere") is None
    (folder / "config.json").write_text("{broken")
    assert model_size_bucket(folder) is None


# -- the file ---------------------------------------------------------------------------------


def test_save_merges_by_key_and_newest_wins(home: Path) -> None:
    save_records([_record("reference", 10.0), _record("twin", 20.0)])
    save_records([_record("reference", 30.0), _record("reference", 5.0, bucket="5B-20B")])
    path = records_path()
    assert path == home / "measurements" / "decode-speed.json"
    data = json.loads(path.read_text())
    assert data["version"] == SCHEMA_VERSION
    got = {(r.backend, r.size_bucket): r.decode_tokens_per_s for r in load_records()}
    assert got == {("reference", "1B-5B"): 30.0, ("twin", "1B-5B"): 20.0, ("reference", "5B-20B"): 5.0}
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == [path.name]  # no temp left


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"version": 99, "records": []}), json.dumps({"version": 1, "records": [{"x": 1}]}), "[]"],
)
def test_a_corrupt_file_is_ignored_with_a_warning_and_replaced_on_save(home: Path, content: str) -> None:
    path = records_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(SpeedRecordWarning, match="ignoring the measurements"):
        assert load_records() == []
    save_records([_record("twin", 12.5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.decode_tokens_per_s for r in load_records()] == [12.5]


def test_concurrent_writers_lose_nothing(home: Path) -> None:
    """Two processes saving 25 records each at once: the lock keeps all 50."""
    code = (
        "import sys\n"
        "from phi3.speed_records import SpeedRecord, save_records\n"
        "for i in range(25):\n"
        "    record = SpeedRecord(sys.argv[1] + str(i), 'e', 'cpu', 'cpu', 'int4', 'under-1B', 1.0 + i, 't', 'm')\n"
        "    save_records([record])\n"
    )
    env = {**os.environ, "PHI3_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", code, name], env=env) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(load_records()) == 50


# -- selection --------------------------------------------------------------------------------


def test_without_a_measurement_the_default_order_decides(two_cpu_backends: Any) -> None:
    chosen = select(two_cpu_backends, "auto", "auto", "fp32", None, MeasuredSpeeds("1B-5B", []))
    assert chosen.backend == "twin"
    assert "no phi3 bench measurement among the cpu backends for 1B-5B models" in chosen.reason
    assert "default order decided (twin > reference" in chosen.reason
    unknown = select(two_cpu_backends, "auto", "auto", "fp32", None, MeasuredSpeeds(None, [_record("reference", 99)]))
    assert unknown.backend == "twin" and "model size unknown" in unknown.reason


def test_the_fastest_measured_backend_wins_within_the_class(two_cpu_backends: Any) -> None:
    measured = MeasuredSpeeds("1B-5B", [_record("reference", 41.5), _record("twin", 37.25)])
    chosen = select(two_cpu_backends, "auto", "auto", "fp32", None, measured)
    assert chosen.backend == "reference"
    assert "fastest measured among the cpu backends for 1B-5B models by phi3 bench" in chosen.reason
    assert "reference 41.5 tok/s (transformers, 2026-11-30), vs twin 37.2 tok/s" in chosen.reason
    swapped = MeasuredSpeeds("1B-5B", [_record("reference", 30.0), _record("twin", 37.25)])
    assert select(two_cpu_backends, "auto", "auto", "fp32", None, swapped).backend == "twin"


@pytest.mark.parametrize(
    "record",
    [
        _record("reference", 99.0, bucket="5B-20B"),  # another model size
        _record("reference", 99.0, precision="bf16"),  # another precision
        _record("reference", 99.0, kind="gpu"),  # another device class
        dataclasses.replace(_record("reference", 99.0), engine="other"),  # not the engine auto would run
    ],
)
def test_only_a_matching_measurement_counts(two_cpu_backends: Any, record: SpeedRecord) -> None:
    assert select(two_cpu_backends, "auto", "auto", "fp32", None, MeasuredSpeeds("1B-5B", [record])).backend == "twin"


def test_device_class_still_comes_first(two_cpu_backends: Any) -> None:
    two_cpu_backends.register(_Gpu(), "gpu_one")
    measured = MeasuredSpeeds("1B-5B", [_record("reference", 500.0)])
    chosen = select(two_cpu_backends, "auto", "auto", "fp32", None, measured)
    assert chosen.backend == "gpu_one"  # a measured fast CPU backend never beats the GPU class
    assert "fastest measured" not in chosen.reason


def test_load_uses_the_saved_measurement(home: Path, two_cpu_backends: Any, tiny_phi3: Path) -> None:
    save_records([_record("reference", 41.5, bucket="under-1B"), _record("twin", 9.0, bucket="under-1B")])
    with phi3.load(tiny_phi3, precision="fp32") as model:
        assert model.backend == "reference"
        assert "reference 41.5 tok/s" in model.selection_reason
    records_path().write_text("garbage")  # a corrupt file never stops a load: the default order decides
    with pytest.warns(SpeedRecordWarning):
        selection = select(two_cpu_backends, "auto", "auto", "fp32", None, MeasuredSpeeds.for_model(tiny_phi3))
    assert selection.backend == "twin"


def _reference_installed() -> bool:
    from importlib.metadata import entry_points

    return "reference" in {ep.name for ep in entry_points(group="phi3")}


@pytest.mark.skipif(not _reference_installed(), reason="needs the phi3-reference-backend distribution")
def test_phi3_bench_saves_what_it_measured(tmp_path: Path, tiny_phi3: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PHI3_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    args = ["bench", str(tiny_phi3), "-b", "reference", "-p", "fp32", "--runs", "1", "--no-cold"]
    args += ["--prompt-tokens", "8", "--new-tokens", "4", "--quiet", "--json"]

    def bench(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "phi3", *args, *extra], capture_output=True, text=True, env=env, timeout=600
        )

    skipped = bench("--no-save")
    assert skipped.returncode == 0, skipped.stderr
    assert not records_path(home).exists()
    done = bench()
    assert done.returncode == 0, done.stderr
    assert "decode speeds saved for auto (under-1B models)" in done.stderr
    measured = json.loads(done.stdout)["results"][0]["summary"]["decode_tokens_per_s"]["median"]
    saved = json.loads(records_path(home).read_text())["records"]
    assert [(r["backend"], r["engine"], r["device_kind"], r["precision"], r["size_bucket"]) for r in saved] == [
        ("reference", "transformers", "cpu", "fp32", "under-1B")
    ]
    assert saved[0]["decode_tokens_per_s"] == pytest.approx(measured)
