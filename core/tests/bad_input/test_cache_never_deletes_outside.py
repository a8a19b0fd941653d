"""Data loss, class 1: `phi3 cache` commands touch nothing but PHI3_HOME's own artifacts.

A key is matched as text against the cache's artifact folders (a documented prefix of at least
four hex characters), never used as a path or a glob pattern.
"""

from __future__ import annotations

import math

import pytest
from _sandbox import Sandbox, one_line_error

from phi3.cache import ArtifactCache, check_age_days
from phi3.errors import ConfigError

HOSTILE_KEYS = [
    "../../..",
    "..",
    "../victim",
    "../../victim",
    "*",
    "?",
    "??????????????????????",
    "[0-9a-f]",
    "[0-9a-f]*",
    "0123*",
    "/",
    "/tmp",
    "~",
    ".",
    "b/",
    "b/..",
    "0123456789abcdef01234567/../..",
    "ABCDEF01",  # upper case is not how keys are printed
    "abc",  # shorter than the documented prefix
    " ",
    "-",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_cache_rm_refuses_keys_that_are_not_keys(sandbox: Sandbox, key: str) -> None:
    artifact = sandbox.add_artifact()
    error = one_line_error(sandbox.phi3("cache", "rm", "--", key))
    assert "not an artifact key" in error or "no cached artifact" in error
    assert artifact.is_dir(), "an artifact was removed by a key that is not its key"
    sandbox.assert_victims_intact()


def test_cache_rm_takes_an_exact_key_or_a_prefix_and_lists_what_it_removes(sandbox: Sandbox) -> None:
    first, second = sandbox.add_artifact(precision="int4"), sandbox.add_artifact(precision="int8")
    done = sandbox.phi3("cache", "rm", first.name[:6])
    assert done.returncode == 0, done.stderr
    assert f"b/{first.name}" in done.stdout and "removed 1 artifact" in done.stdout
    assert not first.exists() and second.is_dir()
    done = sandbox.phi3("cache", "rm", second.name)
    assert done.returncode == 0 and not second.exists()
    sandbox.assert_victims_intact()


def test_cache_rm_checks_every_key_before_removing_any(sandbox: Sandbox) -> None:
    artifact = sandbox.add_artifact()
    one_line_error(sandbox.phi3("cache", "rm", artifact.name, "../victim"))
    assert artifact.is_dir()


def test_cache_rm_all_removes_artifacts_only(sandbox: Sandbox) -> None:
    artifacts = [sandbox.add_artifact(precision=p) for p in ("int4", "int8")]
    (sandbox.home / "artifacts" / "b" / "notes").mkdir()  # not a key: not phi3's to remove
    done = sandbox.phi3("cache", "rm", "--all")
    assert done.returncode == 0, done.stderr
    assert not any(a.exists() for a in artifacts)
    assert (sandbox.home / "artifacts" / "b" / "notes").is_dir()
    sandbox.assert_victims_intact()


def test_a_symlinked_artifact_is_unlinked_never_followed(sandbox: Sandbox) -> None:
    link = sandbox.home / "artifacts" / "b" / ("f" * 24)
    link.parent.mkdir(parents=True)
    link.symlink_to(sandbox.victims[0], target_is_directory=True)
    for args in (("cache", "rm", "f" * 24), ("cache", "prune"), ("cache", "rm", "--all")):
        sandbox.phi3(*args)
        sandbox.assert_victims_intact()
    assert not link.is_symlink()


@pytest.mark.parametrize("age", ["-1", "-0.5", "nan", "NaN", "inf", "-inf", "1e400"])
def test_prune_refuses_ages_that_would_match_everything(sandbox: Sandbox, age: str) -> None:
    artifact = sandbox.add_artifact()
    error = one_line_error(sandbox.phi3("cache", "prune", "--older-than", age))
    assert "--older-than must be a finite number of days" in error
    assert artifact.is_dir()


@pytest.mark.parametrize("age", [-1, math.nan, math.inf, -math.inf, True, "3"])
def test_prune_api_refuses_the_same_ages(sandbox: Sandbox, age: object) -> None:
    with pytest.raises(ConfigError, match="older-than"):
        ArtifactCache(sandbox.home).prune(older_than_days=age)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_age_days(age)  # type: ignore[arg-type]


def test_prune_keeps_young_artifacts_and_everything_outside(sandbox: Sandbox) -> None:
    artifact = sandbox.add_artifact()
    done = sandbox.phi3("cache", "prune", "--older-than", "1")
    assert done.returncode == 0 and artifact.is_dir()
    done = sandbox.phi3("cache", "prune", "--older-than", "0")
    assert done.returncode == 0 and not artifact.exists()
    sandbox.assert_victims_intact()


@pytest.mark.parametrize(
    "args",
    [
        ("cache", "list"),
        ("cache", "list", "--json"),
        ("cache", "path"),
        ("cache", "prune"),
        ("cache", "rm", "--all"),
        ("cache", "rm", "0123456789abcdef01234567"),
        ("cache", "rm", "01234567"),
    ],
)
def test_no_cache_command_touches_a_folder_beside_the_cache(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    """The victim next to PHI3_HOME is even named like a key: only the cache's own folders count."""
    sandbox.add_artifact()
    sandbox.phi3(*args)
    sandbox.assert_victims_intact()
