"""Replicas on several nodes sharing one ``PHI3_HOME``: none loads an artifact another is still writing.

Two real processes stand in for two replicas' nodes on a shared filesystem: one quantizes (and is
held, with the reference backend's ``pause_after_write``, after its weights are written and before
it publishes), the other loads the same model meanwhile. The loader must neither see the half-built
artifact (it sits in ``tmp/``; ``artifacts/`` only ever gets a finished folder by ``os.replace``) nor
build it a second time: it waits on the key's file lock and then loads the published artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from phi3.cache import ArtifactCache

PAUSE_S = 6.0
LOAD = """
import json, sys, phi3
say = lambda message: print(message, file=sys.stderr)
with phi3.load(sys.argv[1], backend="reference", precision="fp32", pause_after_write={pause}, progress=say) as model:
    result = model.generate("Hi", max_new_tokens=3, ignore_eos=True)
    print(json.dumps({{"from_cache": model.artifact.from_cache, "path": str(model.artifact.path),
                      "tokens": result.new_tokens}}))
"""


def test_a_second_node_waits_for_the_build_and_never_sees_it_half_written(tiny_phi3: Path, tmp_path: Path) -> None:
    home = tmp_path / "shared-home"
    env = {**os.environ, "PHI3_HOME": str(home)}
    builder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phi3",
            "quantize",
            str(tiny_phi3),
            "-b",
            "reference",
            "-p",
            "fp32",
            "-O",
            f"pause_after_write={PAUSE_S}",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    written: list[Path] = []
    for _ in range(3000):
        assert builder.poll() is None, builder.communicate()
        written = list((home / "tmp").glob("*/*.safetensors")) if (home / "tmp").is_dir() else []
        if written or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert written, "the quantization never started writing"
    # the weights are on disk, the build is not finished: nothing is published
    assert ArtifactCache(home).artifacts() == []
    loader = subprocess.run(
        [sys.executable, "-c", LOAD.format(pause=PAUSE_S), str(tiny_phi3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    built_out, built_err = builder.communicate(timeout=600)
    assert builder.returncode == 0, built_err
    assert loader.returncode == 0, loader.stderr
    built = json.loads(built_out)
    loaded = json.loads(loader.stdout.strip().splitlines()[-1])
    assert built["from_cache"] is False
    assert loaded == {"from_cache": True, "path": built["path"], "tokens": 3}
    assert "waiting for another phi3 process" in loader.stderr
    assert [artifact.path for artifact in ArtifactCache(home).artifacts()] == [Path(built["path"])]
