#!/usr/bin/env python3
"""CI entry for phi3-llamacpp: build llama-cpp-python's wheel once, reuse it in every session.

llama-cpp-python ships only an sdist for Linux; pip compiles llama.cpp from it (~4-5 min on a
2-core machine). The top-level noxfile runs this script with the session's interpreter *before*
installing the plugin and passes the folder it prints as ``--find-links``:

    python plugins/phi3-llamacpp/ci/wheel_cache.py      # prints the wheel folder (last line)

The folder is ``$PHI3_CI_WHEEL_CACHE`` (default ``~/.cache/phi3-ci/wheels``) /
``llama-cpp-python-<version>-<build key>``, where the version is the pin in
``plugins/phi3-llamacpp/ci-constraints.txt`` and the build key hashes ``CMAKE_ARGS`` and the
interpreter's tag and the CPU's feature flags (llama.cpp compiles with -march=native: a GPU
build, another Python or another CPU never reuses a wheel). The first run builds
the wheel with ``pip wheel --no-deps --no-cache-dir`` (not from pip's own wheel cache, which is keyed
by the sdist alone and would ignore ``CMAKE_ARGS``); later runs find it and return at once. A
wheel is written to a temp folder and renamed into place, so an interrupted build never leaves a
wheel a later run trusts.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent
CONSTRAINTS = PLUGIN / "ci-constraints.txt"
DISTRIBUTION = "llama-cpp-python"


def pinned_version() -> str:
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith(f"{DISTRIBUTION}=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"{CONSTRAINTS} pins no {DISTRIBUTION}==VERSION")


def _cpu_flags() -> str:
    """llama.cpp builds with -march=native: a wheel is only reused on a CPU with the same features."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


NO_AMX_FLAGS = {
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}
"""CPU flag -> ggml option, for a build without -march=native (see :func:`cmake_args`)."""


def cmake_args() -> str:
    """``CMAKE_ARGS`` if set; else, on a CPU with AMX, the CPU's own instruction sets without AMX.

    llama.cpp 0.3.36's AMX kernels (compiled in by -march=native when the CPU has AMX) segfault in
    ``ggml_backend_amx_mul_mat`` on Q4_0 here (ggml-org/llama.cpp#20824, open; #16315: wrong
    results for Q4_0/Q4_1), so such a machine builds with ``GGML_NATIVE=OFF`` and its AVX/AVX512
    features named one by one."""
    given = os.environ.get("CMAKE_ARGS")
    if given is not None:
        return given
    flags = set(_cpu_flags().split())
    if "amx_int8" not in flags:
        return ""
    options = ["-DGGML_NATIVE=OFF"] + [f"-D{option}=ON" for flag, option in NO_AMX_FLAGS.items() if flag in flags]
    return " ".join(options)


def cache_folder(version: str) -> Path:
    root = Path(os.environ.get("PHI3_CI_WHEEL_CACHE") or Path.home() / ".cache" / "phi3-ci" / "wheels")
    tag = f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}-{_cpu_flags()}"
    key = hashlib.sha256(f"{cmake_args()}|{tag}".encode()).hexdigest()[:12]
    return root / f"{DISTRIBUTION}-{version}-{key}"


def main() -> int:
    started = time.monotonic()
    version = pinned_version()
    folder = cache_folder(version)
    if any(folder.glob("llama_cpp_python-*.whl")):
        print(f"[phi3-llamacpp ci] cached wheel for {DISTRIBUTION} {version}", file=sys.stderr)
        print(folder)
        return 0
    folder.parent.mkdir(parents=True, exist_ok=True)
    print(f"[phi3-llamacpp ci] building the {DISTRIBUTION} {version} wheel (once; ~5 min)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder.parent) as scratch:
        # --no-cache-dir: pip's wheel cache is keyed by the sdist alone, so it would hand back a wheel
        # built with other CMAKE_ARGS (this folder's key is the cache that knows them)
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            scratch,
            f"{DISTRIBUTION}=={version}",
        ]
        env = {**os.environ, "CMAKE_ARGS": cmake_args()}
        print(f"[phi3-llamacpp ci] CMAKE_ARGS={env['CMAKE_ARGS']!r}", file=sys.stderr)
        code = subprocess.call(command, stdout=sys.stderr, env=env)
        wheels = list(Path(scratch).glob("llama_cpp_python-*.whl"))
        if code != 0 or not wheels:
            print(f"[phi3-llamacpp ci] pip wheel failed with exit code {code}", file=sys.stderr)
            return code or 1
        staging = Path(scratch) / "done"
        staging.mkdir()
        for wheel in wheels:
            shutil.move(str(wheel), staging / wheel.name)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    print(f"[phi3-llamacpp ci] wheel ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
