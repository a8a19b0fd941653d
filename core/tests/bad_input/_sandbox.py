"""Helpers for the bad-input suites: a private PHI3_HOME with artifacts and victims beside it.

Every test here plants a ``victim`` folder next to its PHI3_HOME (and one inside the working
directory) and checks that it survives, so any command that reaches outside the cache turns red.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from phi3.cache import ArtifactCache, ArtifactSpec
from phi3.types import ModelSource


@dataclass
class Sandbox:
    root: Path
    home: Path
    cwd: Path
    victims: list[Path]

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PHI3_HOME": str(self.home), "HF_HUB_OFFLINE": "1", **extra}

    def phi3(
        self, *args: str, input: str | None = None, timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "phi3", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(**env),
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )

    def add_artifact(self, backend: str = "b", precision: str = "int4") -> Path:
        spec = ArtifactSpec(
            backend=backend,
            source=ModelSource(Path("/m"), f"org/model-{precision}", "rev"),
            precision=precision,
            artifact_format="f",
            options={},
            library_versions={},
        )
        return ArtifactCache(self.home).get_or_build(spec, lambda f: (f / "w.bin").write_bytes(b"w") and {}).path

    def assert_victims_intact(self) -> None:
        for victim in self.victims:
            assert (victim / "precious.txt").read_text() == "keep me", f"{victim} was touched"


def make_sandbox(tmp_path: Path) -> Sandbox:
    """``tmp/victim``, ``tmp/home`` (PHI3_HOME), ``tmp/work`` (cwd) with ``tmp/work/victim``."""
    home, cwd = tmp_path / "home", tmp_path / "work"
    victims = [tmp_path / "victim", cwd / "victim", tmp_path / "0123456789abcdef01234567"]
    for folder in (home, cwd, *victims):
        folder.mkdir(parents=True, exist_ok=True)
    for victim in victims:
        (victim / "precious.txt").write_text("keep me")
    return Sandbox(tmp_path, home, cwd, victims)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed the phi3 way: exit 1, an ``Error:`` line, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "this is a bug in phi3" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr  # progress lines may come first; one error line ends it
    return done.stderr[done.stderr.index("Error: ") :]
