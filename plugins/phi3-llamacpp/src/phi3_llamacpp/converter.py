"""Where llama.cpp's converter comes from, and running it.

``convert_hf_to_gguf.py`` is not in the llama-cpp-python wheel, only in its sdist (under
``vendor/llama.cpp``, with the ``conversion`` package and the matching ``gguf-py``). The converter
must match the llama.cpp that will read the GGUF, so phi3-llamacpp uses the sdist of the *installed*
llama-cpp-python version, in this order:

1. ``PHI3_LLAMACPP_CONVERTER``: a folder holding ``convert_hf_to_gguf.py``, ``conversion/`` and
   ``gguf-py/`` (a llama.cpp checkout of the same version);
2. ``<PHI3_HOME>/llamacpp-converter/llama-cpp-python-<version>/``, extracted once from the sdist:
   ``PHI3_LLAMACPP_SDIST`` (a local ``llama_cpp_python-<version>.tar.gz``) or else
   ``pip download --no-deps --no-binary :all: llama-cpp-python==<version>`` (the registry pip
   already uses; pip's cache makes it quick the second time).

Extraction is locked (``filelock``) and atomic (a temp folder renamed into place).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from phi3.errors import ArtifactError, BackendUnavailableError
from phi3_llamacpp import RUNTIME_DISTRIBUTION

ENV_SOURCES = "PHI3_LLAMACPP_CONVERTER"
ENV_SDIST = "PHI3_LLAMACPP_SDIST"
SCRIPT = "convert_hf_to_gguf.py"


def _complete(folder: Path) -> bool:
    return (folder / SCRIPT).is_file() and (folder / "conversion").is_dir() and (folder / "gguf-py").is_dir()


def _runtime_version() -> str:
    from phi3.probing import distribution_version

    version = distribution_version(RUNTIME_DISTRIBUTION)
    if version is None:
        raise BackendUnavailableError("llama-cpp-python is not installed", hint='pip install "phi3-llamacpp"')
    return version


def _sdist(version: str, scratch: Path) -> Path:
    local = os.environ.get(ENV_SDIST)
    if local:
        path = Path(local)
        if not path.is_file():
            raise ArtifactError(f"{ENV_SDIST}={local} is not a file", hint="point it at llama_cpp_python-*.tar.gz")
        return path
    command = [
        *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"),
        *("-d", str(scratch), f"{RUNTIME_DISTRIBUTION}=={version}"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(scratch.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
        raise ArtifactError(
            f"could not get llama.cpp's converter (the llama-cpp-python {version} sdist): {last}",
            hint=f"set {ENV_SDIST} to a downloaded llama_cpp_python-{version}.tar.gz, or {ENV_SOURCES} to a "
            "llama.cpp folder with convert_hf_to_gguf.py and gguf-py",
        )
    return found[0]


def _extract(sdist: Path, target: Path) -> None:
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp"):
                continue
            inner = parts[3:]
            if inner[0] in ("gguf-py", "conversion") or (len(inner) == 1 and inner[0].endswith(".py")):
                member.name = str(Path(*inner))
                tar.extract(member, target, filter="data")


def converter_sources(cache_root: Path) -> Path:
    """A folder with the converter matching the installed llama-cpp-python (see the module doc)."""
    named = os.environ.get(ENV_SOURCES)
    if named:
        folder = Path(named)
        if not _complete(folder):
            raise ArtifactError(
                f"{ENV_SOURCES}={named} lacks {SCRIPT}, conversion/ or gguf-py/",
                hint="point it at a llama.cpp source folder of the installed llama-cpp-python's version",
            )
        return folder
    from filelock import FileLock

    version = _runtime_version()
    target = cache_root / f"llama-cpp-python-{version}"
    if _complete(target):
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _complete(target):
            return target
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=cache_root) as scratch:
            staging = Path(scratch) / "sources"
            _extract(_sdist(version, Path(scratch)), staging)
            if not _complete(staging):
                raise ArtifactError(f"the llama-cpp-python {version} sdist has no {SCRIPT} under vendor/llama.cpp")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
    return target


def convert(sources: Path, model_dir: Path, outfile: Path, outtype: str, model_name: str) -> None:
    """``convert_hf_to_gguf.py MODEL --outtype T --outfile F --model-name N`` through the driver."""
    command = [
        *(sys.executable, "-m", "phi3_llamacpp.convert_driver", str(sources), str(model_dir)),
        *("--outtype", outtype, "--outfile", str(outfile), "--model-name", model_name),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not outfile.is_file():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ArtifactError(
            f"llama.cpp's convert_hf_to_gguf.py could not convert {model_dir}: {lines[-1] if lines else 'no output'}",
            hint="run phi3 with --debug for the converter's full log",
        ) from RuntimeError(done.stderr[-20000:])


__all__ = ["ENV_SDIST", "ENV_SOURCES", "convert", "converter_sources"]
