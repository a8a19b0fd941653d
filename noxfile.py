"""Test matrix: every distribution in its own virtualenv, then all of them together.

    nox                      # everything CI runs
    nox -s "tests(package='openvino')"
    nox -s demo              # the README's main job: a streamed answer from the smoke model

Each package session installs phi3-core plus that one package with its own CI constraints
(``<package>/ci-constraints.txt``) on top of ``ci/constraints.txt``, so one plugin's pins never
leak into another's. A plugin whose folder does not exist yet is skipped, not failed.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).parent
CORE = ROOT / "core"
PLUGINS = {
    "openvino": ROOT / "plugins" / "phi3-openvino",
    "dml": ROOT / "plugins" / "phi3-dml",
    "npu": ROOT / "plugins" / "phi3-npu",
    "llamacpp": ROOT / "plugins" / "phi3-llamacpp",
}
PACKAGES = {"core": CORE, **PLUGINS}
COMMON_CONSTRAINTS = ROOT / "ci" / "constraints.txt"
CORE_CONSTRAINTS = ROOT / "ci" / "constraints-core.txt"
"""Pins for core's own sessions only (a plugin may pin another transformers)."""
PYTEST = ["pytest", "-ra", "--durations=10"]

nox.options.sessions = [
    "lint",
    "typecheck",
    "core_alone",
    "tests",
    "server",
    "browser",
    "lowest",
    "ray",
    "dml_skew",
    "integration",
    "demo",
]
"""Everything CI runs (README's test command), the README's main job (``demo``) included."""
nox.options.reuse_venv = "no"
nox.options.error_on_external_run = True


KEEP_VENVS = bool(os.environ.get("PHI3_NOX_KEEP_VENVS"))
"""Set PHI3_NOX_KEEP_VENVS=1 to keep each session's virtualenv after it ends (to debug it or to reuse it
with ``nox -R``). By default it is deleted: every venv carries its own torch and vendor runtimes
(1-2 GB each), and the whole matrix kept on disk needs ~16 GB, more than a CI machine may have free."""


def frees_disk(body: Callable[..., None]) -> Callable[..., None]:
    """Delete the session's virtualenv (and with it the session's tmp: pytest's basetemp, built artifacts)
    when the session ends, passed or failed, so the disk peak is the largest session, not the sum."""

    @functools.wraps(body)
    def run(session: nox.Session, **kwargs: Any) -> None:
        try:
            body(session, **kwargs)
        finally:
            venv = session.virtualenv
            if not KEEP_VENVS and venv.venv_backend != "none" and venv.location:
                shutil.rmtree(venv.location, ignore_errors=True)

    return run


def _pytest(session: nox.Session, *args: str, **kwargs: Any) -> None:
    """pytest with its basetemp inside the session's folder (deleted with it), not /tmp/pytest-of-<user>,
    which keeps the last three runs of every session. Not ``session.create_tmp()``: that also points
    TMPDIR there, and Ray's AF_UNIX socket paths under such a deep TMPDIR pass the 107-byte limit."""
    venv = session.virtualenv
    basetemp = [f"--basetemp={Path(venv.location) / 'pytest-tmp'}"] if venv.venv_backend != "none" else []
    session.run(*PYTEST, *basetemp, *args, *session.posargs, **kwargs)


def _constraints(*folders: Path) -> list[str]:
    args = ["-c", str(COMMON_CONSTRAINTS)]
    for folder in folders:
        pinned = folder / "ci-constraints.txt"
        if pinned.is_file():
            args += ["-c", str(pinned)]
    return args


def _quiet_env(session: nox.Session) -> None:
    # No hub access here, and none wanted in tests: fail fast instead of retrying the network.
    session.env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1"})


LOCAL_DEPENDENCIES = {"npu": ("openvino",)}
"""Plugins that depend on another plugin of this repository (phi3-npu's genai engine exports through
phi3-openvino). Installed from their folders: never let pip look for them on the registry."""
INTEGRATION_CONSTRAINTS = ROOT / "ci" / "constraints-integration.txt"


def _plugin_requirements(name: str, extras: str = "test") -> list[str]:
    local = [str(PLUGINS[dep]) for dep in LOCAL_DEPENDENCIES.get(name, ())]
    return [*local, f"{PLUGINS[name]}[{extras}]"]


def _run_setup(session: nox.Session, name: str) -> None:
    setup = PLUGINS[name] / "ci" / "setup.py"
    if setup.is_file():  # e.g. phi3-npu builds intel-npu-acceleration-library offline
        session.run("python", str(setup))


def _prebuilt_wheels(session: nox.Session, names: list[str]) -> list[str]:
    """``--find-links`` for plugins whose vendor library pip would compile from source.

    ``<plugin>/ci/wheel_cache.py`` (phi3-llamacpp: llama-cpp-python, ~5 min to build) builds the wheel
    once into a cache folder keyed by version and build flags and prints that folder; later sessions
    install from it in seconds."""
    links: list[str] = []
    for name in names:
        script = PLUGINS[name] / "ci" / "wheel_cache.py"
        if script.is_file():
            printed = session.run("python", str(script), silent=True) or ""
            links += ["--find-links", printed.strip().splitlines()[-1]]
    return links


def _without_torchvision(session: nox.Session) -> None:
    """Uninstall torchvision after anything that may pull optimum-intel (phi3-openvino, phi3-npu).

    optimum-intel declares torchvision, and with the CPU torch pip picks PyPI's CUDA torchvision, whose
    native ops cannot load: ``import peft`` (the test kit's LoRA adapters, the reference backend's
    adapters) then fails with "operator torchvision::nms does not exist". Phi-3 never uses torchvision;
    pip only warns when it is absent."""
    session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", "torchvision")


def _install_plugin(session: nox.Session, name: str, extras: str = "test") -> None:
    folder = PLUGINS[name]
    wheels = _prebuilt_wheels(session, [name])
    session.install(*wheels, *_constraints(CORE, folder), f"{CORE}[testing]", *_plugin_requirements(name, extras))
    _without_torchvision(session)
    _run_setup(session, name)


def _install_all(session: nox.Session, present: list[str], setup: bool) -> None:
    """Every present plugin in one environment, under the one constraint set they all accept."""
    extras = {"dml": "build,test"}
    requirements = [req for name in present for req in _plugin_requirements(name, extras.get(name, "test"))]
    wheels = _prebuilt_wheels(session, present)
    session.install(*wheels, "-c", str(INTEGRATION_CONSTRAINTS), f"{CORE}[testing]", *dict.fromkeys(requirements))
    _without_torchvision(session)
    if setup:
        for name in present:
            _run_setup(session, name)


@nox.session(python=False if os.environ.get("PHI3_NOX_NO_VENV") else None)
@nox.parametrize("package", list(PACKAGES))
@frees_disk
def tests(session: nox.Session, package: str) -> None:
    """One package's own tests in its own virtualenv."""
    folder = PACKAGES[package]
    if not folder.is_dir():
        session.skip(f"{folder.relative_to(ROOT)} does not exist yet")
    _quiet_env(session)
    if package == "core":
        session.install(
            *_constraints(CORE),
            "-c",
            str(CORE_CONSTRAINTS),
            f"{CORE}[testing,bench,structured]",
            str(CORE / "tests" / "distributions" / "phi3-reference-backend"),
        )
    else:
        _install_plugin(session, package)
    _pytest(session, str(folder / "tests"))


@nox.session
@frees_disk
def core_alone(session: nox.Session) -> None:
    """`pip install ./core` with nothing else: the CLI works and says how to add a backend."""
    session.install(str(CORE))
    session.run("python", "-c", "import phi3, sys; assert not {'torch', 'transformers'} & set(sys.modules)")
    listing = session.run("phi3", "list-backends", silent=True) or ""
    if "pip install phi3-openvino" not in listing:
        session.error(f"phi3 list-backends did not say how to install a backend:\n{listing}")
    session.run("phi3", "--version")
    serve = session.run("phi3", "serve", "smoke", success_codes=[1], silent=True) or ""
    if 'pip install "phi3-core[serve]"' not in serve:
        session.error(f"phi3 serve without the serve extra did not name the pip command:\n{serve}")


REAL_CLIENTS = ("langchain-openai", "langgraph", "litellm")
"""Client libraries apps are written with; the server session drives phi3 serve with each
(pinned in ci/constraints.txt)."""


@nox.session
@frees_disk
def server(session: nox.Session) -> None:
    """phi3 serve end to end: a real server subprocess, the openai client, on the reference backend and
    every plugin that runs here (openvino, dml), installed together under the integration pins."""
    _quiet_env(session)
    served = [name for name in ("openvino", "dml") if PLUGINS[name].is_dir()]
    extras = {"dml": "build,test"}
    session.install(
        "-c",
        str(INTEGRATION_CONSTRAINTS),
        "-c",
        str(COMMON_CONSTRAINTS),
        f"{CORE}[serve,testing,structured]",
        str(CORE / "tests" / "distributions" / "phi3-reference-backend"),
        *(f"{PLUGINS[name]}[{extras.get(name, 'test')}]" for name in served),
        "openai",
        "httpx",
        "psutil",  # test_soak_short.py samples the server's RSS
        *REAL_CLIENTS,
    )
    _without_torchvision(session)  # phi3-openvino pulls optimum-intel
    _pytest(session, str(CORE / "tests" / "server"), str(CORE / "tests" / "test_imports.py"))
    _llama_index_clients(session)


LLAMA_INDEX = ("llama-index-llms-openai-like==0.8.1", "llama-index-llms-openai==0.8.3", "llama-index-core==0.14.25")
"""Pinned here, not in ci/constraints.txt: they need openai<3 and run in a virtualenv of their own."""


def _llama_index_clients(session: nox.Session) -> None:
    """llama-index's OpenAILike against phi3 serve from this session's virtualenv (every
    llama-index-llms-openai release needs openai<3, which the other clients cannot share)."""
    venv = Path(session.virtualenv.location) / "llama-index-venv"
    session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
    python = str(venv / ("Scripts" if sys.platform == "win32" else "bin") / "python")
    session.run(python, "-m", "pip", "install", "--quiet", *LLAMA_INDEX, "pytest>=8", "httpx", external=True)
    server_python = str(
        Path(session.virtualenv.location) / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    )
    session.run(
        python,
        "-m",
        "pytest",
        "-ra",
        f"--confcutdir={CORE / 'tests' / 'clients'}",  # core/tests/conftest.py imports phi3, absent here
        str(CORE / "tests" / "clients"),
        env={"PHI3_SERVER_PYTHON": server_python},
        external=True,
    )


LOWEST_TESTS = (
    "test_api.py",
    "test_cache.py",
    "test_plugins.py",
    "test_generation_config.py",
    "test_option_specs.py",
    "test_structured_output.py",
    "test_transformers_structured.py",
    "test_tiny_model.py",
    "test_model_close.py",
    "test_tools.py",
    "test_cli.py::test_usage_errors_exit_2",
    "test_cli.py::test_user_errors_exit_1_with_one_line",
    "server/test_absent_fields.py",
    "server/test_reference_server.py",
)
"""What the ``lowest`` session runs (under core/tests): the fast tests that reach each direct dependency
(pluggy, click, jsonschema, filelock, platformdirs, the testing extra's transformers/tokenizers, llguidance,
FastAPI/starlette/uvicorn/pydantic through a real server); the slow CLI subprocess tests are left to
``tests(core)``. About 2 minutes on two cores, install included."""


@nox.session
@frees_disk
def lowest(session: nox.Session) -> None:
    """phi3-core on the lowest version of each of its direct dependencies its pyproject allows (uv's
    ``--resolution lowest-direct``: transitive ones at their newest compatible), running core's fast
    tests and the server's: a lower bound too old for the code turns this red (bounds raised for that
    name the reason in core/pyproject.toml). torch stays the CPU build every session uses (2.13.0):
    CI's machines have no other, and PyPI's would pull GB of CUDA wheels."""
    _quiet_env(session)
    # torch alone (the CPU build, as every session pins it): its dependencies (filelock, jinja2 ...) are
    # left to uv, which keeps anything already installed, so they must not be there yet
    session.install("-c", str(COMMON_CONSTRAINTS), "--no-deps", "torch")
    session.install("uv==0.13.9")
    links = [arg for link in os.environ.get("PIP_FIND_LINKS", "").split() for arg in ("--find-links", link)]
    bin_dir = Path(session.virtualenv.location) / ("Scripts" if sys.platform == "win32" else "bin")
    session.run(
        "uv", "pip", "install", "--python", str(bin_dir / "python"), "--resolution", "lowest-direct", *links,
        "torch==2.13.0",  # already installed (the CPU build): kept
        f"{CORE}[testing,serve,structured]",
        str(CORE / "tests" / "distributions" / "phi3-reference-backend"),
        "openai==3.57.0",  # the server tests' client and harness (test tools, as pinned in ci/constraints.txt)
        "httpx==0.28.1",
    )  # fmt: skip
    session.run("uv", "pip", "list", "--python", str(bin_dir / "python"))
    _pytest(session, *(str(CORE / "tests" / test) for test in LOWEST_TESTS))


@nox.session
@frees_disk
def ray(session: nox.Session) -> None:
    """phi3 serve --ray end to end: a two-node Ray cluster on 127.0.0.1 (Ray's own test cluster), the
    reference backend, 2 replicas, the openai client; then a local Ray started and stopped by the command."""
    _quiet_env(session)
    session.install(
        "-c",
        str(INTEGRATION_CONSTRAINTS),
        "-c",
        str(COMMON_CONSTRAINTS),
        f"{CORE}[ray,serve,structured,testing]",
        str(CORE / "tests" / "distributions" / "phi3-reference-backend"),
        "openai",
        "httpx",
        "psutil",
    )
    # test_adapters_ray lives with the other adapter server tests; it needs Ray, so it runs here
    _pytest(session, str(CORE / "tests" / "ray_serve"), str(CORE / "tests" / "server" / "test_adapters_ray.py"))


@nox.session
@frees_disk
def dml_skew(session: nox.Session) -> None:
    """phi3-dml artifacts built by the newest builder load under the older runtime users really have.

    Today a Windows DirectML user can only install onnxruntime-genai-directml 0.13.1; its Linux CPU
    twin (0.13.1 + onnxruntime 1.24.4, ci-constraints-skew.txt) runs artifacts built here with the
    newest builder, in a second virtualenv that has no builder and no torch.
    """
    folder = PLUGINS["dml"]
    if not folder.is_dir():
        session.skip("plugins/phi3-dml does not exist yet")
    _quiet_env(session)
    session.install(*_constraints(CORE, folder), f"{CORE}[testing]", f"{folder}[build,test]")
    tmp = Path(session.create_tmp())
    artifacts = tmp / "dml-skew-artifacts"
    session.run("python", str(folder / "tests" / "skew" / "build_skew_artifacts.py"), str(artifacts))
    old = tmp / "dml-skew-venv"
    session.run(sys.executable, "-m", "venv", "--clear", str(old), external=True)
    python = str(old / ("Scripts" if sys.platform == "win32" else "bin") / "python")
    session.run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        str(folder / "ci-constraints-skew.txt"),
        str(CORE),
        str(folder),
        "pytest>=8",
        external=True,
    )
    session.run(
        python,
        "-m",
        "pytest",
        "-ra",
        str(folder / "tests" / "skew"),
        "-m",
        "skew",
        *session.posargs,
        env={"PHI3_DML_SKEW_ARTIFACTS": str(artifacts)},
        external=True,
    )


INTEGRATION_EXPECTED = {"openvino": "available", "dml": "available", "npu": "no device", "llamacpp": "available"}
"""What each plugin must report in the integration session (tests/test_integration.py): every installed
plugin usable. ``dml`` runs on its CPU provider off Windows; ``npu`` honestly reports ``no device`` on CI
machines (no Intel NPU) and is run on its CPU override device. On a machine with an NPU set
PHI3_EXPECTED_BACKENDS yourself (e.g. ``openvino,dml,npu,llamacpp``)."""


@nox.session
@frees_disk
def integration(session: nox.Session) -> None:
    """Every distribution installed together: the CLI end to end across plugins; each must be usable."""
    present = [name for name, folder in PLUGINS.items() if folder.is_dir()]
    _quiet_env(session)
    _install_all(session, present, setup=True)
    # the docs/examples llama-cpp-python backend's own converter (tests/test_example_backends.py); the gguf-py
    # that llama-cpp-python 0.3.36's vendored llama.cpp carries
    session.install("gguf==0.19.0")
    expected = ",".join(f"{name}={INTEGRATION_EXPECTED[name]}" for name in present)
    session.env["PHI3_EXPECTED_BACKENDS"] = os.environ.get("PHI3_EXPECTED_BACKENDS") or expected
    _pytest(session, str(ROOT / "tests"))


@nox.session
@frees_disk
def lint(session: nox.Session) -> None:
    """ruff over every package."""
    session.install("ruff==0.17.5")
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", "--diff", str(ROOT))


@nox.session
@frees_disk
def typecheck(session: nox.Session) -> None:
    """mypy --strict on phi3-core and every plugin's package (vendor libraries are untyped: skipped)."""
    present = [folder for folder in PLUGINS.values() if folder.is_dir()]
    # the serve and ray extras: phi3.server is checked against FastAPI/pydantic/uvicorn/Ray Serve's own type hints
    session.install(*_constraints(CORE), "mypy==2.4.1", "pytest>=8", f"{CORE}[serve,ray]")
    if present:
        session.install("--no-deps", *(str(folder) for folder in present))
    packages = [str(CORE / "src" / "phi3"), *(str(next((f / "src").glob("phi3_*"))) for f in present)]
    session.run("mypy", "--config-file", str(ROOT / "mypy.ini"), *packages)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """benchmarks/run.py: phi3 vs the direct library calls, llama.cpp and a roofline -> RESULTS.md (~15-25 min).

    Not part of the default sessions: it measures speed, which tests never assert.
    """
    present = [name for name, folder in PLUGINS.items() if folder.is_dir()]
    _quiet_env(session)
    _install_all(session, present, setup=False)
    # llama-cpp-python builds llama.cpp from source here (~4 min)
    session.install("-c", str(INTEGRATION_CONSTRAINTS), f"{CORE}[bench,serve]", "llama-cpp-python[server]==0.3.36")
    _without_torchvision(session)
    session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs)


@nox.session
@frees_disk
def demo(session: nox.Session) -> None:
    """The main job: a streamed chat answer from the built-in smoke model on the best backend here.

    Installs every plugin (without building the archived NPU library) and lets ``backend=auto``
    choose among what really works on this machine; phi3 prints what it picked and why.
    """
    present = [name for name, folder in PLUGINS.items() if folder.is_dir()]
    _install_all(session, present, setup=False)
    session.env["HF_HUB_OFFLINE"] = "1"
    if os.environ.get("CI"):  # CI runs the demo too: keep its artifacts out of the machine's user cache
        session.env["PHI3_HOME"] = str(Path(session.virtualenv.location) / "phi3-home")
    session.run("phi3", "list-backends")
    session.run("phi3", "generate", "smoke", "Tell me about AI PCs.", "--max-new-tokens", "64", *session.posargs)


PLAYWRIGHT = "playwright==1.65.3"
"""Drives the chat page's tests through its bundled driver only: the browser is the OS's Chromium, never
one ``playwright install`` downloads."""
BROWSER_ARTIFACTS = ROOT / ".nox" / "browser-artifacts"
"""The browser session's screenshots (kept after its virtualenv is deleted; .nox/ is git-ignored)."""


def _chromium(session: nox.Session) -> str:
    """The Chromium to drive: PHI3_CHROMIUM, else ``chromium`` on PATH, else Debian's package installed
    with apt-get when running as root on a Debian-like system; otherwise the session fails naming the
    fix (it never skips: CI must run it)."""
    given = os.environ.get("PHI3_CHROMIUM")
    if given:
        if not Path(given).is_file():
            session.error(f"PHI3_CHROMIUM={given} is not a file; point it at a Chromium or Chrome executable")
        return given
    found = shutil.which("chromium")
    if not found and getattr(os, "geteuid", lambda: -1)() == 0 and shutil.which("apt-get"):
        quiet = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=quiet)
        session.run("apt-get", "install", "-y", "-qq", "chromium", external=True, env=quiet)
        found = shutil.which("chromium")
    if not found:
        session.error(
            "the browser session needs Chromium: run it as root on Debian (it installs the chromium package), "
            "or install Chromium yourself (apt-get install chromium) or set PHI3_CHROMIUM=/path/to/chromium"
        )
    return str(found)


@nox.session
@frees_disk
def browser(session: nox.Session) -> None:
    """The chat page ``phi3 serve`` serves at /, in a real headless Chromium driven by playwright against
    a real ``phi3 serve smoke`` on openvino (core/tests/browser, ~1.5 min of tests); screenshots of its
    main states land in .nox/browser-artifacts/."""
    _quiet_env(session)
    chromium = _chromium(session)
    session.install(
        "-c",
        str(INTEGRATION_CONSTRAINTS),
        "-c",
        str(COMMON_CONSTRAINTS),
        f"{CORE}[serve,testing,structured]",
        f"{PLUGINS['openvino']}[test]",
        "httpx",
        PLAYWRIGHT,
    )
    _without_torchvision(session)  # phi3-openvino pulls optimum-intel
    shutil.rmtree(BROWSER_ARTIFACTS, ignore_errors=True)
    session.env.update({"PHI3_CHROMIUM": chromium, "PHI3_BROWSER_ARTIFACTS": str(BROWSER_ARTIFACTS)})
    _pytest(session, str(CORE / "tests" / "browser"))
