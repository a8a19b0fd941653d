#!/usr/bin/env python3
"""Install intel-npu-acceleration-library into the running interpreter's environment.

Usage (run it with the *target* environment's python, e.g. a venv's), from a phi3 checkout or from
an installed phi3-npu::

    python plugins/phi3-npu/scripts/build_npu_library.py [options]
    python -m phi3_npu.build_library [--version 1.4.0] [--workdir DIR]
        [--force] [--keep-workdir] [--keep-wheel DIR] [--verbose]
        [--torch-spec "torch==2.13.0"] [--transformers-spec "transformers>=4.45,<=5.23.0"]
        [--openvino-version 2024.4.0]

Exit codes: 0 installed (or already installed), 1 a step failed (its name is printed),
2 unsupported platform / interpreter / bad arguments.

Why this script exists
----------------------
intel-npu-acceleration-library (last release 1.4.0, project archived) publishes wheels for
Windows only.  On Linux, pip builds the sdist, whose CMakeLists downloads a prebuilt OpenVINO
2024.4 archive from storage.openvinotoolkit.org, and only for Ubuntu (on Debian it stops with
"Linux distribution Debian is unsupported").  This script builds it offline instead:

1. pip-installs the run/build prerequisites with working pins (PINS below):
   ``neural-compressor==3.7.1`` (3.8+ lacks ``neural_compressor.adaptor``, which the library
   imports), ``numpy<2`` (what neural-compressor 3.7.1 needs), ``setuptools>=70.1,<82``
   (neural-compressor imports ``pkg_resources``, removed in setuptools 82; >=70.1 builds wheels
   without the ``wheel`` package), ``six``, ``torch`` and ``transformers`` (4.45-5.23 work).
2. ``pip download --no-deps openvino==2024.4.0`` (the wheel carries the same runtime libraries
   and CMake package as the archive) and lays it out like the archive the CMakeLists expects::

       <ov>/openvino/...            the unpacked wheel (OpenVINOTargets.cmake resolves
                                    ${prefix}/openvino/libs and ${prefix}/openvino/include)
       <ov>/runtime/cmake        -> ../openvino/cmake            (find_package(OpenVINO))
       <ov>/runtime/lib/intel64  -> ../../openvino/libs          (copied into the package)
       <ov>/openvino/libs/libopenvino.so -> libopenvino.so.2440  (bindings.py dlopens this name)

   The archive's ``python/openvino`` is deliberately NOT provided: upstream would copy it to
   ``intel_npu_acceleration_library/external/openvino``, which ``bindings.py`` puts first on
   ``sys.path``; that would shadow any ``openvino`` package the environment has.
3. writes a CMake toolchain file that sets ``OV_LIBRARY_URL`` to ``file:///nonexistent`` (skips
   the Ubuntu check) and ``FETCHCONTENT_SOURCE_DIR_OPENVINO`` to ``<ov>`` (so FetchContent
   downloads nothing), both ``CACHE ... FORCE``.  CMake >= 3.21 reads the toolchain file named
   by the environment variable ``CMAKE_TOOLCHAIN_FILE``, which is how it reaches the sdist's
   ``setup.py`` (it calls plain ``cmake`` with its own arguments).
4. ``pip wheel --no-deps --no-build-isolation --no-cache-dir intel-npu-acceleration-library==V``
   with that environment, checks the wheel holds the native libraries, and installs it with
   ``pip install --force-reinstall --no-deps``.
5. imports the library in a subprocess to verify it.

The build compiles with ``-march=native`` (upstream flag): build on the machine that runs it and
do not share the wheel with other CPUs.

Needs on Linux: x86_64, CPython 3.8-3.12 (openvino 2024.4.0 / numpy<2 have no 3.13 wheels),
a C++ compiler and make (Debian: ``apt-get install build-essential``), cmake >= 3.21 (if it is
missing or older, the ``cmake`` PyPI package is pip-installed into the environment), and access
to PyPI through pip.

On Windows the published wheel is installed with ``pip install intel-npu-acceleration-library``
(plus the same pins).  macOS is not supported by the library at all (no wheel, and its loader
raises for any platform other than win32/linux), so the script says so and exits 2.

The script never writes into the current working directory: all work happens in a temporary
directory (or a fresh subdirectory of --workdir), removed on success unless --keep-workdir or
--workdir is given, and kept (its path printed) on failure.  Standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

DIST_NAME = "intel-npu-acceleration-library"
IMPORT_NAME = "intel_npu_acceleration_library"
DEFAULT_VERSION = "1.4.0"
OPENVINO_VERSION = "2024.4.0"
DEFAULT_TORCH_SPEC = "torch==2.13.0"
DEFAULT_TRANSFORMERS_SPEC = "transformers>=4.45,<=5.23.0"
# Prerequisites that must hold for the library to import and quantize (see module docstring).
BASE_PINS = ["neural-compressor==3.7.1", "numpy<2", "setuptools>=70.1,<82", "six"]
MIN_CMAKE = (3, 21)


class StepError(RuntimeError):
    """A named step failed."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"[{step}] {message}")
        self.step = step


def log(msg: str) -> None:
    print(f"[build_npu_library] {msg}", flush=True)


class Runner:
    """Runs commands in the work directory, logging their output to files there."""

    def __init__(self, workdir: Path, verbose: bool) -> None:
        self.workdir = workdir
        self.verbose = verbose
        self.count = 0
        self.step = "start"  # the step in progress, for unexpected errors

    def run(self, step: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.count += 1
        logfile = self.workdir / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower())}.log"
        log(f"  $ {' '.join(cmd)}")
        t0 = time.monotonic()
        with open(logfile, "w", encoding="utf-8", errors="replace") as fh:
            if self.verbose:
                proc = subprocess.Popen(
                    cmd,
                    cwd=self.workdir,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                )
                assert proc.stdout is not None
                for line in proc.stdout:
                    sys.stdout.write(line)
                    fh.write(line)
                rc = proc.wait()
            else:
                rc = subprocess.call(cmd, cwd=self.workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
        if rc != 0:
            tail = logfile.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
            raise StepError(
                step, f"command exited {rc}: {' '.join(cmd)}\n--- last lines of {logfile} ---\n" + "\n".join(tail)
            )
        log(f"  ok ({time.monotonic() - t0:.1f}s, log: {logfile.name})")


def pip_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def installed_version() -> str | None:
    importlib.invalidate_caches()  # a dist-info may have appeared since this process started
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return None


def import_check(cwd: Path) -> tuple[bool, str]:
    """Import the library in a fresh interpreter (it loads native code); return (ok, output)."""
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        # optimum-intel pulls in torchvision; next to a CPU torch pip picks a CUDA build whose import
        # fails, and transformers (imported by the library) imports it when installed. Hide it, as
        # phi3.vendor_compat does at run time.
        "try:\n    import torchvision\nexcept Exception:\n"
        "    [sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] == 'torchvision']\n"
        "    sys.modules['torchvision'] = None\n"
        f"import {IMPORT_NAME} as m, {IMPORT_NAME}.backend as b\n"
        "print('version', m.__version__, 'npu_available', b.npu_available())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, out


def already_installed(version: str, cwd: Path) -> bool:
    have = installed_version()
    if have != version:
        if have:
            log(f"{DIST_NAME} {have} is installed; {version} was asked for")
        return False
    ok, out = import_check(cwd)
    if ok:
        log(f"{DIST_NAME} {version} is already installed and imports ({out.splitlines()[-1]}); nothing to do")
        return True
    log(f"{DIST_NAME} {version} is installed but does not import; rebuilding. Import said:\n{out[-2000:]}")
    return False


def cmake_version(exe: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"cmake version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def preflight_linux(runner: Runner, env: dict[str, str]) -> None:
    step = "preflight"
    machine = os.uname().machine
    if machine not in ("x86_64", "AMD64"):
        raise StepError(step, f"only x86_64 is supported (OpenVINO 2024.4 wheel, -march=native build); got {machine}")
    if sys.version_info < (3, 8) or sys.version_info >= (3, 13):
        raise StepError(
            step,
            "CPython 3.8-3.12 is required (openvino 2024.4.0 and numpy<2 have no wheels "
            f"for {sys.version_info.major}.{sys.version_info.minor})",
        )
    if (
        subprocess.call(
            [sys.executable, "-m", "pip", "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        != 0
    ):
        raise StepError(step, f"pip is not available in {sys.executable} (python -m ensurepip)")
    cxx = env.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        raise StepError(step, "no C++ compiler found (Debian/Ubuntu: apt-get install build-essential)")
    generator = env.get("CMAKE_GENERATOR", "")
    if "Ninja" in generator:
        if not shutil.which("ninja", path=env["PATH"]):
            raise StepError(step, "CMAKE_GENERATOR is Ninja but ninja is not on PATH")
    elif not shutil.which("make", path=env["PATH"]):
        raise StepError(step, "make not found (Debian/Ubuntu: apt-get install build-essential)")
    cmake = shutil.which("cmake", path=env["PATH"])
    ver = cmake_version(cmake) if cmake else None
    if ver is None or ver < MIN_CMAKE:
        found = f"{ver[0]}.{ver[1]}" if ver else "not found"
        log(
            f"cmake {found}; need >= {MIN_CMAKE[0]}.{MIN_CMAKE[1]} "
            "(CMAKE_TOOLCHAIN_FILE env var): installing the cmake PyPI package into this environment"
        )
        runner.run("install cmake", pip_cmd("install", f"cmake>={MIN_CMAKE[0]}.{MIN_CMAKE[1]},<4"), env)
        cmake = shutil.which("cmake", path=env["PATH"])
        ver = cmake_version(cmake) if cmake else None
        if ver is None or ver < MIN_CMAKE:
            raise StepError(step, f"cmake >= 3.21 still not found on PATH={env['PATH']}")
    log(f"  python {sys.version.split()[0]} ({sys.executable}), compiler {cxx}, cmake {cmake} {ver[0]}.{ver[1]}")


def layout_openvino(wheel: Path, ov_dir: Path) -> str:
    """Unpack the openvino wheel into ov_dir and lay it out as the OpenVINO archive."""
    step = "lay out OpenVINO"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(ov_dir)
    pkg = ov_dir / "openvino"
    libs, cmake_dir = pkg / "libs", pkg / "cmake"
    if not (cmake_dir / "OpenVINOConfig.cmake").is_file():
        raise StepError(step, f"{cmake_dir}/OpenVINOConfig.cmake missing in {wheel.name}")
    sonames = sorted(p.name for p in libs.glob("libopenvino.so.*"))
    if len(sonames) != 1:
        raise StepError(step, f"expected exactly one libopenvino.so.<N> in {libs}, found {sonames}")
    (ov_dir / "runtime" / "lib").mkdir(parents=True)
    os.symlink("../openvino/cmake", ov_dir / "runtime" / "cmake")
    os.symlink("../../openvino/libs", ov_dir / "runtime" / "lib" / "intel64")
    os.symlink(sonames[0], libs / "libopenvino.so")
    for must in ("runtime/cmake/OpenVINOConfig.cmake", "runtime/lib/intel64/libopenvino.so"):
        if not (ov_dir / must).exists():
            raise StepError(step, f"{ov_dir / must} does not resolve")
    return sonames[0]


def check_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        n
        for n in (
            f"{IMPORT_NAME}/lib/libintel_npu_acceleration_library.so",
            f"{IMPORT_NAME}/lib/libopenvino.so",
            f"{IMPORT_NAME}/lib/libopenvino_intel_cpu_plugin.so",
            f"{IMPORT_NAME}/lib/libopenvino_intel_npu_plugin.so",
        )
        if n not in names
    ]
    if missing:
        raise StepError("check wheel", f"{wheel.name} lacks {missing}")


def build_linux(args: argparse.Namespace, runner: Runner, pins: list[str]) -> None:
    workdir = runner.workdir
    env = dict(os.environ)
    # The environment's own scripts dir (e.g. venv/bin) first, so a pip-installed cmake is found
    # even when the venv is not activated.
    scripts = sysconfig.get_path("scripts")
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])

    runner.step = "preflight"
    log("step 1/6: preflight")
    preflight_linux(runner, env)

    runner.step = "install prerequisites"
    log(f"step 2/6: install prerequisites: {' '.join(pins)}")
    runner.run("install prerequisites", pip_cmd("install", *pins), env)

    ov_version = args.openvino_version
    runner.step = "download openvino"
    log(f"step 3/6: download openvino=={ov_version} wheel (not installed)")
    dl = workdir / "download"
    runner.run(
        "download openvino",
        pip_cmd("download", "--no-deps", "--only-binary", ":all:", f"openvino=={ov_version}", "-d", str(dl)),
        env,
    )
    wheels = sorted(dl.glob("openvino-*.whl"))
    if len(wheels) != 1:
        raise StepError("download openvino", f"expected one openvino wheel in {dl}, found {wheels}")

    runner.step = "lay out OpenVINO"
    log("step 4/6: lay out OpenVINO as the archive CMake expects, write the toolchain file")
    ov_dir = workdir / "openvino"
    soname = layout_openvino(wheels[0], ov_dir)
    toolchain = workdir / "ov-offline-toolchain.cmake"
    toolchain.write_text(
        "# Written by build_npu_library.py: use the unpacked openvino wheel, download nothing.\n"
        'set(OV_LIBRARY_URL "file:///nonexistent" CACHE STRING "" FORCE)\n'
        f'set(FETCHCONTENT_SOURCE_DIR_OPENVINO "{ov_dir.as_posix()}" CACHE PATH "" FORCE)\n',
        encoding="utf-8",
    )
    log(f"  {ov_dir} (libopenvino.so -> {soname}), toolchain {toolchain}")

    runner.step = "build wheel"
    log(f"step 5/6: build {DIST_NAME}=={args.version} from the sdist")
    env_build = dict(env, CMAKE_TOOLCHAIN_FILE=str(toolchain))
    wheel_dir = workdir / "wheels"
    t0 = time.monotonic()
    runner.run(
        "build wheel",
        pip_cmd(
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--no-binary",
            DIST_NAME,
            f"{DIST_NAME}=={args.version}",
            "-w",
            str(wheel_dir),
        ),
        env_build,
    )
    built = sorted(wheel_dir.glob(f"{IMPORT_NAME}-{args.version}-*.whl"))
    if len(built) != 1:
        raise StepError("build wheel", f"expected one {IMPORT_NAME} wheel in {wheel_dir}, found {built}")
    check_wheel(built[0])
    log(f"  built {built[0].name} ({built[0].stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f}s")
    if args.keep_wheel:
        dest = Path(args.keep_wheel).expanduser().resolve()
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[0], dest / built[0].name)
        log(f"  copied the wheel to {dest} (built with -march=native: use it on this machine only)")

    runner.step = "install wheel"
    log("step 6/6: install the wheel")
    runner.run("install wheel", pip_cmd("install", "--force-reinstall", "--no-deps", str(built[0])), env)


def install_published(args: argparse.Namespace, runner: Runner, pins: list[str]) -> None:
    log(
        f"{sys.platform}: {DIST_NAME} publishes a wheel for this platform; installing it with "
        f"`pip install {DIST_NAME}=={args.version}` (plus the prerequisite pins)"
    )
    runner.run("install published wheel", pip_cmd("install", f"{DIST_NAME}=={args.version}", *pins))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", default=DEFAULT_VERSION, help=f"library version (default {DEFAULT_VERSION})")
    p.add_argument(
        "--workdir",
        help="parent directory for the work files (default: the system temp dir); "
        "a fresh subdirectory is made in it and kept",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep the work directory after success")
    p.add_argument("--keep-wheel", metavar="DIR", help="copy the built wheel into DIR (Linux)")
    p.add_argument("--force", action="store_true", help="rebuild and reinstall even if already installed")
    p.add_argument("--torch-spec", default=DEFAULT_TORCH_SPEC, help=f"default {DEFAULT_TORCH_SPEC!r}")
    p.add_argument(
        "--transformers-spec", default=DEFAULT_TRANSFORMERS_SPEC, help=f"default {DEFAULT_TRANSFORMERS_SPEC!r}"
    )
    p.add_argument(
        "--openvino-version",
        default=OPENVINO_VERSION,
        help=f"openvino wheel standing in for the archive; must match the OV_VERSION in the library's "
        f"CMakeLists.txt (default {OPENVINO_VERSION}, the one 1.4.0 uses)",
    )
    p.add_argument("--verbose", action="store_true", help="stream command output too")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    if sys.platform == "darwin":
        log(
            f"macOS is not supported by {DIST_NAME}: no wheel is published for it and its loader raises "
            "'Platform darwin is not supported'. On Windows: pip install intel-npu-acceleration-library"
        )
        return 2
    if not (sys.platform.startswith("linux") or sys.platform == "win32"):
        log(f"unsupported platform {sys.platform}")
        return 2

    cwd = Path.cwd().resolve()
    if args.workdir:
        parent = Path(args.workdir).expanduser().resolve()
        if parent == cwd:
            log("--workdir must not be the current working directory (this script never writes there)")
            return 2
        parent.mkdir(parents=True, exist_ok=True)
    else:
        parent = None
    workdir = Path(tempfile.mkdtemp(prefix="npu-lib-build-", dir=parent)).resolve()
    keep = bool(args.keep_workdir or args.workdir)
    if args.version != DEFAULT_VERSION:
        log(f"warning: only {DIST_NAME} {DEFAULT_VERSION} (with openvino {OPENVINO_VERSION}) is verified")
    pins = [args.torch_spec, args.transformers_spec, *BASE_PINS]
    runner = Runner(workdir, args.verbose)
    log(f"{DIST_NAME}=={args.version} into {sys.prefix} (python {sys.executable}); work dir {workdir}")
    ok = False
    try:
        if not args.force and already_installed(args.version, workdir):
            ok, keep = True, False  # nothing was done: drop the (empty) work dir
            return 0
        if sys.platform == "win32":
            install_published(args, runner, pins)
        else:
            build_linux(args, runner, pins)
        runner.step = "verify"
        log("verify: import in a fresh interpreter")
        have = installed_version()
        if have != args.version:
            raise StepError("verify", f"installed version is {have!r}, expected {args.version!r}")
        good, out = import_check(workdir)
        if not good:
            raise StepError("verify", f"`import {IMPORT_NAME}` failed:\n{out[-3000:]}")
        log(f"  {out.splitlines()[-1]}")
        log(f"done: {DIST_NAME} {have} installed in {time.monotonic() - t_start:.1f}s")
        ok = True
        return 0
    except StepError as exc:
        log(f"FAILED at step '{exc.step}': {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 1
    except Exception as exc:  # an unexpected error (OSError, ...): still name the step
        import traceback

        traceback.print_exc()
        log(f"FAILED at step '{runner.step}': {type(exc).__name__}: {exc}")
        return 1
    finally:
        if ok and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work files kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
