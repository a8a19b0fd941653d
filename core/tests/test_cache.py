"""The artifact cache is keyed, atomic and serialised: checked with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import phi3
from phi3.cache import MANIFEST_NAME, ArtifactCache, ArtifactSpec
from phi3.types import ModelSource


def _spec(**changes: object) -> ArtifactSpec:
    values: dict[str, object] = {
        "backend": "b",
        "source": ModelSource(Path("/m"), "org/model", "abc"),
        "precision": "int4",
        "artifact_format": "f",
        "options": {"group_size": 128},
        "library_versions": {"lib": "1.0"},
    }
    values.update(changes)
    return ArtifactSpec(**values)  # type: ignore[arg-type]


def test_key_covers_every_input_and_is_stable() -> None:
    base = _spec()
    assert base.key == _spec().key
    variants = [
        _spec(backend="c"),
        _spec(source=ModelSource(Path("/m"), "org/model", "abd")),
        _spec(source=ModelSource(Path("/m"), "org/other", "abc")),
        _spec(precision="int8"),
        _spec(artifact_format="g"),
        _spec(options={"group_size": 64}),
        _spec(library_versions={"lib": "1.1"}),
    ]
    assert len({base.key, *(v.key for v in variants)}) == len(variants) + 1
    # the local path is not part of the identity: moving a model keeps its artifacts
    assert _spec(source=ModelSource(Path("/elsewhere"), "org/model", "abc")).key == base.key


def test_builds_once_then_serves_from_cache(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(folder: Path) -> dict[str, object]:
        calls.append(folder)
        (folder / "w.bin").write_bytes(b"x" * 10)
        return {"context_length": 8}

    first = cache.get_or_build(_spec(), build)
    second = cache.get_or_build(_spec(), build)
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert first.path == second.path and first.context_length == 8
    assert json.loads((first.path / MANIFEST_NAME).read_text())["files"] == {"w.bin": 10}
    assert not any(cache.tmp_dir.iterdir())


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def build(folder: Path) -> dict[str, object]:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build(_spec(), build)
    assert cache.lookup(_spec()) is None
    assert not any(cache.tmp_dir.iterdir())
    assert not cache.path_for(_spec()).exists()


def test_prune_removes_corrupt_artifacts_and_old_ones(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    good = cache.get_or_build(_spec(), lambda f: (f / "w.bin").write_bytes(b"abc") and {})
    bad = cache.get_or_build(_spec(precision="int8"), lambda f: (f / "w.bin").write_bytes(b"abc") and {})
    (bad.path / "w.bin").write_bytes(b"a")
    assert [a.path for a in cache.artifacts()] == [good.path]
    assert cache.prune() == [bad.path]
    assert cache.prune(older_than_days=0) == [good.path]
    assert cache.artifacts() == []


def _quantize_cmd(model: Path, pause: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "phi3",
        "quantize",
        str(model),
        "-b",
        "reference",
        "-p",
        "fp32",
        "-O",
        f"pause_after_write={pause}",
        "--json",
    ]


def test_killed_quantization_leaves_nothing_a_later_load_trusts(
    tiny_phi3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "PHI3_HOME": str(home)}
    proc = subprocess.Popen(
        _quantize_cmd(tiny_phi3, 120), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    written: list[Path] = []
    while time.monotonic() < deadline and not written:
        assert proc.poll() is None, proc.communicate()
        written = list((home / "tmp").glob("*/*.safetensors")) if (home / "tmp").is_dir() else []
        time.sleep(0.1)
    assert written, "the quantization never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    cache = ArtifactCache(home)
    assert cache.artifacts() == []  # nothing complete was published
    assert not list((home / "artifacts").glob("*/*")) if (home / "artifacts").exists() else True
    # monkeypatch restores the session's own PHI3_HOME afterwards (popping it sent every later test in
    # this process to the user's real cache)
    monkeypatch.setenv("PHI3_HOME", str(home))
    with phi3.load(tiny_phi3, backend="reference", precision="fp32") as model:
        assert not model.artifact.from_cache  # rebuilt, not trusted
        assert model.generate("Hi", max_new_tokens=2, ignore_eos=True).new_tokens == 2
    # the stale temp folder of the killed build was cleaned when the key was rebuilt
    assert not any(p.name.startswith(model.artifact.key) for p in (home / "tmp").iterdir())


def test_concurrent_quantizations_of_one_key_build_once(tiny_phi3: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PHI3_HOME": str(tmp_path / "home")}
    procs = [
        subprocess.Popen(
            _quantize_cmd(tiny_phi3, 2),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    results = [json.loads(out) for out, _ in outputs]
    assert sorted(r["from_cache"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"]
    waited = [err for _, err in outputs if "waiting for another phi3 process" in err]
    assert len(waited) == 1
