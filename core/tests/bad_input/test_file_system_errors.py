"""Unusable paths become phi3's one-line errors that name the path and the fix, never a traceback.

PHI3_HOME (or a folder inside it) that is a file, a lock file that is a folder, manifests and
configs of the wrong JSON type, a closed stdin, a stdout that fails or goes away.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _sandbox import Sandbox, one_line_error

import phi3
from phi3.cache import MANIFEST_NAME, ArtifactCache, ArtifactSpec
from phi3.fs_errors import FileSystemError, describe_os_error
from phi3.types import ModelSource

pytestmark = pytest.mark.usefixtures("reference_installed")


@pytest.fixture(scope="module")
def reference_installed() -> None:
    from importlib.metadata import entry_points

    if "reference" not in {ep.name for ep in entry_points(group="phi3")}:
        pytest.skip("needs tests/distributions/phi3-reference-backend installed (the nox session does it)")


_GENERATE = [sys.executable, "-m", "phi3", "generate"]


def _generate(sandbox: Sandbox, model: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return sandbox.phi3("generate", str(model), "Hi", "-b", "reference", "-p", "fp32", "-n", "2", *extra, **env)


@pytest.mark.parametrize("inside", ["", "artifacts", "tmp", "locks", "compiled", "artifacts/reference"])
def test_a_file_where_phi3_keeps_a_folder(sandbox: Sandbox, tiny_phi3: Path, inside: str) -> None:
    home = sandbox.root / "home-file" if not inside else sandbox.home
    blocker = home / inside if inside else home
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    error = one_line_error(_generate(sandbox, tiny_phi3, PHI3_HOME=str(home)))
    assert str(blocker) in error and ("is a file" in error or "a file stands where a folder is needed" in error)
    assert "PHI3_HOME" in error or "move that file away" in error
    assert blocker.read_text() == "not a folder"


def test_a_lock_file_that_is_a_folder(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    spec = ArtifactSpec("b", ModelSource(Path("/m"), "m", "r"), "int4", "f", {}, {})
    (tmp_path / "locks" / f"{spec.key}.lock").mkdir(parents=True)
    with pytest.raises(phi3.Phi3Error, match="is not a file") as info:
        cache.get_or_build(spec, lambda f: {})
    assert str(tmp_path / "locks") in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions; the mechanism is the same as for ENOSPC")
def test_a_read_only_cache(sandbox: Sandbox, tiny_phi3: Path) -> None:
    sandbox.home.chmod(0o500)
    try:
        error = one_line_error(_generate(sandbox, tiny_phi3))
        assert "not writable" in error and str(sandbox.home) in error
    finally:
        sandbox.home.chmod(0o700)


@pytest.mark.parametrize(
    ("code", "words", "fix"),
    [
        (errno.ENOSPC, "no space left", "free space"),
        (errno.EACCES, "permission is denied", "permissions"),
        (errno.EROFS, "read-only", "PHI3_HOME"),
        (errno.ENOTDIR, "a file stands where a folder is needed", "move that file away"),
    ],
)
def test_os_errors_are_worded_with_the_path_and_the_fix(code: int, words: str, fix: str) -> None:
    error = describe_os_error(OSError(code, os.strerror(code), "/cache/x"), "phi3's cache folder")
    assert isinstance(error, FileSystemError) and isinstance(error, phi3.Phi3Error)
    assert "/cache/x" in str(error) and words in error.message and fix in (error.hint or "")


@pytest.mark.parametrize(
    "manifest",
    [
        [],
        None,
        "text",
        {"format": "phi3-artifact", "files": ["w.bin"]},
        {"format": "phi3-artifact", "files": {"w.bin": "1"}},
        {"format": "phi3-artifact", "files": {"w.bin": -1}},
        {"format": "phi3-artifact", "files": {"../../victim/precious.txt": 7}},
        {"format": "other"},
    ],
)
def test_manifests_of_the_wrong_shape_are_artifact_errors(sandbox: Sandbox, manifest: object) -> None:
    folder = sandbox.cwd / "artifact"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w")
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(phi3.ArtifactError):
        phi3.load(folder)
    error = one_line_error(sandbox.phi3("generate", str(folder), "Hi"))
    assert str(folder) in error
    sandbox.assert_victims_intact()


@pytest.mark.parametrize("config", [[], None, "phi3", 3, {"model_type": "phi3", "hidden_size": "64"}])
def test_configs_of_the_wrong_shape_are_model_errors(
    sandbox: Sandbox, tiny_phi3: Path, tmp_path: Path, config: object
) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_phi3, model)
    (model / "config.json").write_text(json.dumps(config))
    error = one_line_error(sandbox.phi3("quantize", str(model), "-b", "reference", "-p", "fp32"))
    assert "config" in error
    assert not (sandbox.home / "artifacts").exists() or not list((sandbox.home / "artifacts").glob("*/*"))


def test_dash_reads_stdin_and_a_closed_stdin_is_a_phi3_error(sandbox: Sandbox, tiny_phi3: Path) -> None:
    args = [sys.executable, "-m", "phi3", "generate", str(tiny_phi3), "-", "-b", "reference", "-p", "fp32"]
    closed = subprocess.run(
        ["bash", "-c", '"$@" 0<&-', "bash", *args],
        capture_output=True,
        text=True,
        env=sandbox.env(),
        cwd=sandbox.cwd,
        timeout=600,
        check=False,
    )
    assert "stdin is closed" in one_line_error(closed)
    empty = sandbox.phi3("generate", str(tiny_phi3), "-", "-b", "reference", "-p", "fp32", input="")
    assert "the prompt is empty" in one_line_error(empty)


def test_stdout_on_a_full_disk_is_one_error_line(sandbox: Sandbox, tiny_phi3: Path) -> None:
    for args in (["list-backends"], ["generate", str(tiny_phi3), "Hi", "-b", "reference", "-p", "fp32", "-n", "4"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [sys.executable, "-m", "phi3", *args],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                env=sandbox.env(),
                cwd=sandbox.cwd,
                timeout=600,
                check=False,
            )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and "no space left" in errors[0].lower(), done.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(sandbox: Sandbox, tiny_phi3: Path) -> None:
    """`phi3 generate ... | head -c1`: no traceback, the exit status a shell gives a SIGPIPE'd writer.

    The reader closes before the first byte (reading one byte first would race the tiny model,
    which can write its whole answer into the pipe buffer before the close)."""
    proc = subprocess.Popen(
        [*_GENERATE, str(tiny_phi3), "Hi", "-b", "reference", "-p", "fp32", "-n", "200", "--ignore-eos", "--raw"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=sandbox.env(),
        cwd=sandbox.cwd,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the model has loaded, so the first write of the answer meets a closed pipe
    code = proc.wait(timeout=600)
    stderr = proc.stderr.read().decode()
    assert code == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "Error" not in stderr, stderr


def _small_file_limit() -> None:
    """In the child: files may not grow past 64 KiB, as on a nearly full disk (EFBIG, not SIGXFSZ)."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_disk_filling_during_export_is_one_line_and_leaves_nothing(sandbox: Sandbox, tiny_phi3: Path) -> None:
    """The backend's writer (safetensors, in Rust) fails mid-export; its vendor text is not the answer."""
    done = subprocess.run(
        [sys.executable, "-m", "phi3", "quantize", str(tiny_phi3), "-b", "reference", "-p", "fp32"],
        capture_output=True,
        text=True,
        env=sandbox.env(),
        cwd=sandbox.cwd,
        timeout=600,
        check=False,
        preexec_fn=_small_file_limit,
    )
    error = one_line_error(done)
    assert "file size limit" in error and "free space" in error and "SafetensorError" not in error
    assert not list((sandbox.home / "artifacts").glob("*/*")) if (sandbox.home / "artifacts").exists() else True
    assert not list((sandbox.home / "tmp").iterdir()) if (sandbox.home / "tmp").exists() else True


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), errno.ENOSPC),
        (RuntimeError("write failed: No space left on device"), errno.ENOSPC),
        (OSError(errno.EROFS, "Read-only file system"), errno.EROFS),
        (RuntimeError("shape mismatch"), None),
    ],
)
def test_vendor_io_failures_are_recognised_by_their_errno(exc: BaseException, code: int | None) -> None:
    from phi3.fs_errors import os_errno_of

    assert os_errno_of(exc) == code
    wrapped = RuntimeError("vendor failure")
    wrapped.__cause__ = exc
    assert os_errno_of(wrapped) == code
