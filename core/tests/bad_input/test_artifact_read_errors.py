"""A damaged artifact is one line naming the file and the command that rebuilds it.

An artifact from ``phi3 quantize -o DIR`` is rebuilt with ``--overwrite``; one in PHI3_HOME is removed
with ``phi3 cache rm KEY``: the hint says whichever applies.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from _sandbox import Sandbox, one_line_error

import phi3
from phi3.cache import MANIFEST_NAME
from phi3.errors import ArtifactError


def _set_context(folder: Path) -> None:
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), "context_length": "4096"}))


def _manifest_a_folder(folder: Path) -> None:
    (folder / MANIFEST_NAME).unlink()
    (folder / MANIFEST_NAME).mkdir()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "context_length as text": (_set_context, "has context_length '4096', not a whole number of tokens"),
    "manifest is a folder": (_manifest_a_folder, "is unreadable"),
}


@pytest.fixture(scope="module")
def built(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "built"
    phi3.quantize(tiny_phi3, backend="reference", precision="fp32", output=out)
    return out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_output_artifact_names_the_file_and_the_rebuild_command(
    sandbox: Sandbox, built: Path, tmp_path: Path, damage: str
) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(built, folder)
    change, words = DAMAGE[damage]
    change(folder)
    with pytest.raises(ArtifactError) as info:
        phi3.load(folder, backend="reference")
    message = str(info.value)
    assert words in message and str(folder / MANIFEST_NAME) in message
    assert f"phi3 quantize MODEL -o {folder} --overwrite" in message
    error = one_line_error(sandbox.phi3("generate", str(folder), "Hi", "--max-new-tokens", "2"))
    assert words in error and "--overwrite" in error


def test_a_cached_artifact_says_cache_rm(sandbox: Sandbox, tiny_phi3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI3_HOME", str(sandbox.home))
    artifact = phi3.quantize(tiny_phi3, backend="reference", precision="fp32")
    _set_context(artifact.path)
    error = one_line_error(sandbox.phi3("generate", str(tiny_phi3), "Hi", "-b", "reference", "-p", "fp32"))
    assert "not a whole number of tokens" in error and f"phi3 cache rm {artifact.path.name}" in error


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("a" * 300, "cannot be a local folder: File name too long"),
        ("b" * 2000, "the model id is 2000 characters long"),
        ("~nosuchuser-7f3a/model", "~nosuchuser-7f3a names no user of this machine"),
    ],
)
def test_model_ids_the_file_system_cannot_look_up_are_named(sandbox: Sandbox, model: str, words: str) -> None:
    with pytest.raises(phi3.ModelNotFoundError, match=words):
        phi3.load(model, backend="reference", precision="fp32")
    assert words in one_line_error(sandbox.phi3("generate", model, "Hi", "-b", "reference", "-p", "fp32"))
