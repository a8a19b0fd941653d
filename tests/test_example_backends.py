"""The third-party backends of docs/examples pass phi3's conformance suite, in both plugin shapes.

- ``docs/examples/phi3-llama-cpp-python``: the engine shape that docs/writing-a-backend.md teaches
  (an engine object, ``phi3.engine_hooks``' forwarding hooks, typed ``OptionSpec`` options), for
  llama-cpp-python with its own GGUF converter (``gguf``), in under 100 lines of plugin code.
- ``docs/examples/phi3-llama-cpp-python-hooks``: the same runtime written against the original
  contract (every hook by hand, untyped option names), which must keep working through 0.x.

Nothing is installed into the environment: each example is made visible to this process and to the
``phi3`` subprocesses the suite starts (``list-backends``, the probe check) exactly as pip would,
through a ``.dist-info`` folder holding the entry points its pyproject.toml declares, on ``sys.path``
and ``PYTHONPATH`` for the duration of its test class only. The converter needs the ``gguf``
package; where it is not installed it is pip-installed into a temporary folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import phi3
from phi3 import plugins
from phi3.testing.suite import PROMPT, BackendConformanceSuite

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
NEW_SHAPE = EXAMPLES / "phi3-llama-cpp-python"
OLD_SHAPE = EXAMPLES / "phi3-llama-cpp-python-hooks"
GGUF_REQUIREMENT = "gguf==0.19.0"
"""The gguf-py that llama-cpp-python 0.3.36's own llama.cpp sources carry."""
PLUGIN_LINE_BUDGET = 100
CONVERTER = "convert.py"


def entry_points(pyproject: Path) -> dict[str, str]:
    """The ``[project.entry-points.phi3]`` table of a pyproject.toml (name -> module)."""
    section = re.search(r"^\[project\.entry-points\.phi3\]\n(.*?)(?=^\[|\Z)", pyproject.read_text(), re.M | re.S)
    assert section, f"{pyproject} registers no phi3 entry point"
    return dict(re.findall(r'^\s*"?([\w.-]+)"?\s*=\s*"([\w.:]+)"', section.group(1), re.M))


def project_name(pyproject: Path) -> str:
    found = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
    assert found, f"{pyproject} has no project name"
    return found.group(1)


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment (docstrings count: they are code)."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type not in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines)


def _make_visible(example: Path, site: Path) -> list[str]:
    """A dist-info for ``example`` in ``site``: what ``pip install`` would leave for importlib.metadata."""
    pyproject = example / "pyproject.toml"
    name = project_name(pyproject)
    info = site / f"{name.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n", encoding="utf-8")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points(pyproject).items())
    (info / "entry_points.txt").write_text(f"[phi3]\n{lines}", encoding="utf-8")
    return [str(site), str(example / "src")]


@pytest.fixture(scope="session")
def gguf_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Where the converter's ``gguf`` comes from: nowhere extra when installed, else a pip --target folder."""
    if importlib.util.find_spec("gguf") is not None:
        return []
    target = tmp_path_factory.mktemp("gguf")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), GGUF_REQUIREMENT],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"could not pip-install {GGUF_REQUIREMENT} into {target}: {done.stderr[-2000:]}"
    return [str(target)]


@pytest.fixture(scope="class")
def example_visible(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, gguf_paths: list[str]
) -> Iterator[None]:
    """The test class's example (``example``) importable and registered, here and in subprocesses."""
    paths = _make_visible(request.cls.example, tmp_path_factory.mktemp("example-site")) + gguf_paths
    paths += [str(example / "src") for example in request.cls.also_importable]
    saved_path, saved_env = list(sys.path), os.environ.get("PYTHONPATH")
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([saved_env] if saved_env else [])])
    importlib.invalidate_caches()
    plugins.reset_registry()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env
        plugins.reset_registry()


def _precisions(example: Path) -> tuple[str, ...]:
    """What the example's probe advertises (read at collection, before its class makes it visible)."""
    (module,) = entry_points(example / "pyproject.toml").values()
    sys.path.insert(0, str(example / "src"))
    try:
        return tuple(importlib.import_module(module).phi3_backend_info().precisions)
    finally:
        sys.path.remove(str(example / "src"))


class ParityWithTheReference:
    """Beyond the suite: at fp32 the example decodes what transformers decodes in fp32, ids and text."""

    backend: ClassVar[str]

    def test_fp32_greedy_ids_are_the_references(self, tiny_phi3: Path) -> None:
        from phi3.testing.reference import reference_greedy_ids

        with phi3.load(tiny_phi3, backend=self.backend, device="CPU", precision="fp32") as model:
            result = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True)
        assert list(result.token_ids) == reference_greedy_ids(tiny_phi3, PROMPT, max_new_tokens=16)

    def test_fp32_chat_answer_is_the_references_on_the_smoke_model(self) -> None:
        """The trained smoke model answers in words (the random tiny model's bytes are not valid text)."""
        from transformers import AutoTokenizer

        from phi3 import smoke
        from phi3.testing.reference import reference_greedy_ids

        folder = smoke.checkpoint()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        messages = [{"role": "user", "content": "Hi"}]  # answered in 16 tokens, then <|end|>
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = reference_greedy_ids(folder, prompt, max_new_tokens=32, ignore_eos=False)
        with phi3.load(folder, backend=self.backend, device="CPU", precision="fp32") as model:
            assert model.apply_chat_template(messages) == prompt
            result = model.generate(prompt, max_new_tokens=32)
        assert result.finish_reason == "eos" and len(expected) < 32, "the smoke model should end its answer"
        assert list(result.token_ids) == expected[:-1]
        assert result.text == tokenizer.decode(expected[:-1]) and result.text.strip()


@pytest.mark.usefixtures("example_visible")
class TestNewShapeExample(ParityWithTheReference, BackendConformanceSuite):
    example = NEW_SHAPE
    backend = "llama-cpp-python"
    device = "CPU"
    precisions = _precisions(NEW_SHAPE)
    vendor_modules = ("llama_cpp", "gguf")
    also_importable: tuple[Path, ...] = ()


@pytest.mark.usefixtures("example_visible")
class TestOldShapeExample(ParityWithTheReference, BackendConformanceSuite):
    example = OLD_SHAPE
    backend = "llama-cpp-python-hooks"
    device = "CPU"
    precisions = _precisions(OLD_SHAPE)
    vendor_modules = ("llama_cpp", "gguf")
    also_importable = (NEW_SHAPE,)  # its converter (a dependency in its pyproject.toml)


def test_the_new_shape_example_is_under_100_lines_of_plugin_code() -> None:
    package = NEW_SHAPE / "src" / "phi3_llama_cpp_python"
    counted = {path.name: code_lines(path) for path in sorted(package.glob("*.py")) if path.name != CONVERTER}
    assert (package / CONVERTER).is_file(), "the converter moved: update CONVERTER"
    assert sum(counted.values()) < PLUGIN_LINE_BUDGET, f"plugin code lines per file: {counted}"


def test_the_old_shape_example_writes_every_hook_by_hand() -> None:
    """It is the contract's other shape only while it imports nothing from phi3.engine_hooks."""
    source = (OLD_SHAPE / "src" / "phi3_llama_cpp_python_hooks" / "plugin.py").read_text(encoding="utf-8")
    assert "engine_hooks" not in source and "OptionSpec" not in source
    for hook in ("phi3_backend_info", "phi3_quantize", "phi3_load", "phi3_generate", "phi3_apply_chat_template"):
        assert f"@hookimpl\ndef {hook}(" in source, hook


def test_code_lines_counts_code_and_docstrings_not_comments_or_blanks(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Doc\nstring."""\n\n# a comment\nx = (\n    1,  # trailing\n)\n', encoding="utf-8")
    assert code_lines(sample) == 5


def test_the_tutorial_shows_the_example_plugin_verbatim() -> None:
    """docs/writing-a-backend.md includes plugin.py as it is (the code the suite runs), not a paraphrase."""
    plugin = (NEW_SHAPE / "src" / "phi3_llama_cpp_python" / "plugin.py").read_text(encoding="utf-8")
    tutorial = (EXAMPLES.parent / "writing-a-backend.md").read_text(encoding="utf-8")
    assert f"```python\n{plugin}```\n" in tutorial, "copy plugin.py into docs/writing-a-backend.md's code block"
