"""The conformance suite every phi3 backend passes. Subclass it, naming only your backend::

    # tests/conftest.py
    pytest_plugins = ["phi3.testing.fixtures"]

    # tests/test_conformance.py
    from phi3.testing.suite import BackendConformanceSuite

    class TestMyBackend(BackendConformanceSuite):
        backend = "mybackend"
        device = "CPU"          # what the tests run on (an explicit override is fine)

It runs your real backend on the tiny Phi-3 from :func:`phi3.testing.tiny_model.make_tiny_phi3`:
registration and listing, a cheap probe (no vendor import), quantize/load/generate for every
precision you advertise, deterministic greedy decoding, streaming, ``max_new_tokens``, stop strings,
seeded sampling, chat templates, config and device errors, too-long prompts and the cache hit on a
second load; and the :class:`phi3.GenerationConfig` semantics runtimes must agree on (``top_k=1``
is greedy, the seed decides sampled text, ``repetition_penalty`` acts), on float32 and bf16
checkpoints. A standard test can be replaced only with :func:`phi3.testing.override` and a reason.
Settings: ``vendor_modules`` (your runtime's modules, which listing must not import) and
``tokenizer_model`` (test on a checkpoint with a SentencePiece ``tokenizer.model``).

Structured output: every kind your backend declares (``BackendInfo.structured_output``) must hold
on every schema of :mod:`phi3.testing.structured` over greedy and many seeded samples (the output
parses and validates with ``jsonschema``), and every kind it does not declare must be refused with
``UnsupportedError`` before decoding. ``structured_max_tokens`` bounds each constrained decode.

LoRA adapters (:mod:`phi3.testing.adapter_suite`): a backend that declares ``adapters`` gives the
fp32 merged reference's greedy ids on its high-fidelity precisions and never leaks one adapter into
the next request; one that does not refuses them with ``AdapterError``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import phi3
from phi3.plugins import get_registry
from phi3.testing import structured
from phi3.testing.adapter_suite import AdapterConformanceTests
from phi3.testing.overrides import OVERRIDE_ATTRIBUTE
from phi3.types import CONSTRAINT_KINDS, BackendStatus, ConstraintKind, GenerationResult

VENDOR_MODULES = (
    "torch",
    "transformers",
    "openvino",
    "openvino_genai",
    "openvino_tokenizers",
    "optimum",
    "nncf",
    "onnxruntime",
    "onnxruntime_genai",
    "onnx",
    "intel_npu_acceleration_library",
    "tokenizers",
)
"""Modules that ``import phi3`` and listing backends must not import."""

PROMPT = "The quick brown fox"
MESSAGES = [{"role": "user", "content": "Hello, who are you?"}]


class BackendConformanceSuite(AdapterConformanceTests):
    """Standard tests for a backend; configure with the class attributes below."""

    backend: ClassVar[str]
    engine: ClassVar[str | None] = None
    """Engine to test; None means the backend's default. Subclass once per engine."""
    device: ClassVar[str] = "auto"
    precisions: ClassVar[tuple[str, ...] | None] = None
    """Precisions to test; None means every precision the backend advertises."""
    backend_options: ClassVar[dict[str, Any]] = {}
    new_tokens: ClassVar[int] = 12
    vendor_modules: ClassVar[tuple[str, ...]] = ()
    """Your runtime's own top-level modules (e.g. ``("llama_cpp",)``): listing backends must not
    import them either. Checked in a fresh interpreter, with :data:`VENDOR_MODULES`."""
    tokenizer_model: ClassVar[bool] = False
    """Test on a tiny checkpoint that also has a SentencePiece ``tokenizer.model`` (converters such as
    llama.cpp's need one); its ``tokenizer.json`` is derived from it, so both encode alike."""
    structured_max_tokens: ClassVar[int] = 160
    """Token budget of each constrained decode; every test schema fits well inside it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if not name.startswith("test_") or not callable(value):
                continue
            if hasattr(BackendConformanceSuite, name) and not hasattr(value, OVERRIDE_ATTRIBUTE):
                raise TypeError(
                    f"{cls.__name__}.{name} replaces a standard phi3 conformance test; decorate it with "
                    "@phi3.testing.override(reason=...) to say why"
                )

    # -- parametrisation and shared fixtures --------------------------------------------------

    @classmethod
    def _precisions(cls) -> tuple[str, ...]:
        if cls.precisions is not None:
            return cls.precisions
        entry = get_registry().entry(cls.backend)
        return entry.info.precisions if entry.info is not None else ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "precision" in metafunc.fixturenames:
            metafunc.parametrize("precision", self._precisions())
        if "adapter_precision" in metafunc.fixturenames:
            metafunc.parametrize("adapter_precision", self._exact())

    @classmethod
    def load(cls, model: Path, precision: str | None = None, **options: Any) -> phi3.Model:
        """``phi3.load`` with the suite's backend, device, engine and options."""
        return phi3.load(
            model,
            backend=cls.backend,
            device=cls.device,
            precision=precision or cls._precisions()[0],
            engine=cls.engine,
            **{**cls.backend_options, **options},
        )

    @pytest.fixture(scope="class")
    @classmethod
    def tiny_phi3(cls, tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The session's tiny checkpoint, or (``tokenizer_model = True``) its twin with ``tokenizer.model``."""
        if not cls.tokenizer_model:
            return tiny_phi3
        from phi3.testing.tiny_model import make_tiny_phi3

        return make_tiny_phi3(tmp_path_factory.mktemp("models") / "tiny-phi3-spm", sentencepiece_model=True)

    @pytest.fixture(scope="class")
    @classmethod
    def loaded_model(cls, tiny_phi3: Path) -> Iterator[phi3.Model]:
        """One model per test class (first precision), shared by the tests that only read it."""
        model = cls.load(tiny_phi3)
        yield model
        model.close()

    # -- registration and probe ---------------------------------------------------------------

    def test_registered_and_listed(self, run_phi3: Any) -> None:
        entry = get_registry().entry(self.backend)
        assert entry.status is not BackendStatus.BROKEN, entry.error
        assert entry.info is not None and entry.info.precisions, "a backend must advertise precisions"
        if self.engine is not None:
            assert entry.info.engine(self.engine) is not None
        done = run_phi3("list-backends", "--json")
        assert done.returncode == 0, done.stderr
        listed = {b["name"]: b for b in json.loads(done.stdout)["backends"]}
        assert self.backend in listed, f"{self.backend} missing from phi3 list-backends: {sorted(listed)}"
        assert listed[self.backend]["status"] == entry.status.value

    def test_probe_imports_no_vendor_library(self) -> None:
        code = (
            "import json, sys, phi3\n"
            "phi3.backends()\n"
            f"vendor = {tuple(VENDOR_MODULES) + tuple(self.vendor_modules)!r}\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in vendor)))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == [], "listing backends imported vendor modules"

    # -- quantize, load, generate -------------------------------------------------------------

    def test_each_precision_quantizes_loads_and_generates(self, tiny_phi3: Path, precision: str) -> None:
        with self.load(tiny_phi3, precision) as model:
            assert model.precision == precision
            assert model.artifact.path.is_dir()
            result = model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        assert result.new_tokens == self.new_tokens
        assert result.finish_reason == "length"
        assert result.prompt_tokens > 0
        assert result.backend == self.backend and result.precision == precision
        assert result.engine and result.device

    def test_greedy_is_deterministic(self, loaded_model: phi3.Model) -> None:
        first = loaded_model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        second = loaded_model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        assert first.token_ids == second.token_ids
        assert first.text == second.text

    def test_seeded_sampling_is_reproducible(self, loaded_model: phi3.Model) -> None:
        config = phi3.GenerationConfig(
            max_new_tokens=self.new_tokens,
            do_sample=True,
            temperature=0.9,
            top_p=0.95,
            top_k=50,
            seed=1234,
            ignore_eos=True,
        )
        first = loaded_model.generate(PROMPT, config)
        second = loaded_model.generate(PROMPT, config)
        assert first.new_tokens == self.new_tokens
        assert first.token_ids == second.token_ids

    # -- GenerationConfig semantics that every runtime must agree on (see phi3.generation_config) --

    def test_top_k_1_sampling_is_greedy(self, loaded_model: phi3.Model) -> None:
        greedy = loaded_model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        for seed in (1, 2):
            sampled = loaded_model.generate(
                PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True, do_sample=True, top_k=1, seed=seed
            )
            assert sampled.token_ids == greedy.token_ids, "top_k=1 must keep only the argmax token"

    def test_the_seed_decides_sampled_text(self, loaded_model: phi3.Model) -> None:
        """Same seed, same text (checked above); different seeds, different text on the tiny model,
        whose near-uniform distribution makes a collision over 12 tokens practically impossible."""
        config = phi3.GenerationConfig(max_new_tokens=self.new_tokens, do_sample=True, ignore_eos=True)
        runs = {loaded_model.generate(PROMPT, config.replace(seed=seed)).token_ids for seed in (1, 2, 3)}
        assert len(runs) > 1, "three seeds sampled the same tokens: the seed is not passed to the runtime"

    def test_repetition_penalty_changes_greedy_output(self, loaded_model: phi3.Model) -> None:
        """A strong penalty over the prompt and output must move greedy decoding off the tokens it has seen."""
        plain = loaded_model.generate(PROMPT, max_new_tokens=24, ignore_eos=True)
        penalised = loaded_model.generate(PROMPT, max_new_tokens=24, ignore_eos=True, repetition_penalty=20.0)
        assert penalised.token_ids != plain.token_ids, "repetition_penalty had no effect"

    def test_a_bf16_checkpoint_quantizes_loads_and_generates(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """The family ships bf16 weights; every test above used float32 ones."""
        from phi3.testing.tiny_model import make_tiny_phi3

        model_dir = make_tiny_phi3(tmp_path_factory.mktemp("models") / "tiny-phi3-bf16", dtype="bfloat16")
        with self.load(model_dir) as model:
            first = model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
            second = model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        assert first.new_tokens == self.new_tokens and first.token_ids == second.token_ids

    def test_stream_pieces_join_to_the_full_text(self, loaded_model: phi3.Model) -> None:
        stream = loaded_model.stream(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        pieces = list(stream)
        assert len(pieces) >= 2, "a streaming backend yields more than one piece"
        assert "".join(pieces) == stream.result.text
        assert stream.result.text == loaded_model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True).text

    def test_max_new_tokens_is_honoured(self, loaded_model: phi3.Model) -> None:
        for n in (1, 5):
            result = loaded_model.generate(PROMPT, max_new_tokens=n, ignore_eos=True)
            assert result.new_tokens == n
            assert result.finish_reason == "length"

    def test_stop_strings_are_honoured(self, loaded_model: phi3.Model) -> None:
        full = loaded_model.generate(PROMPT, max_new_tokens=24, ignore_eos=True).text
        visible = full.strip()
        assert len(visible) >= 4, f"need some text to pick a stop string from, got {full!r}"
        stop = visible[len(visible) // 2 : len(visible) // 2 + 2]
        expected = full[: full.index(stop)]
        result = loaded_model.generate(PROMPT, max_new_tokens=24, ignore_eos=True, stop=[stop])
        assert result.finish_reason == "stop"
        assert result.text == expected
        assert stop not in result.text

    def test_chat_uses_the_models_own_template(self, loaded_model: phi3.Model, tiny_phi3: Path) -> None:
        from transformers import AutoTokenizer

        expected = AutoTokenizer.from_pretrained(tiny_phi3).apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True
        )
        assert loaded_model.apply_chat_template(MESSAGES) == expected
        result = loaded_model.chat(MESSAGES, max_new_tokens=4, ignore_eos=True)
        assert result.new_tokens == 4
        assert result.prompt_tokens > len(MESSAGES[0]["content"].split())

    def test_result_reports_what_ran(self, loaded_model: phi3.Model) -> None:
        result = loaded_model.generate(PROMPT, max_new_tokens=self.new_tokens, ignore_eos=True)
        assert result.backend == self.backend
        assert result.engine == loaded_model.engine
        assert result.device == loaded_model.device and result.device
        if self.device.lower() != "auto":
            assert result.device.lower().startswith(self.device.lower().split(".")[0].split(":")[0])
        assert 0 < result.time_to_first_token_s <= result.total_s
        assert result.decode_tokens_per_s > 0
        assert len(result.token_ids) == result.new_tokens

    # -- errors -------------------------------------------------------------------------------

    def test_bad_config_is_refused_before_the_backend_runs(self, loaded_model: phi3.Model) -> None:
        for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"max_new_tokens": 0}, {"top_k": -3}, {"no_such_option": 1}):
            with pytest.raises(phi3.ConfigError):
                loaded_model.generate(PROMPT, **bad)

    def test_unknown_backend_option_is_refused(self, tiny_phi3: Path) -> None:
        with pytest.raises(phi3.ConfigError, match="no_such_option"):
            self.load(tiny_phi3, no_such_option=1)

    def test_unknown_device_is_a_phi3_error(self, tiny_phi3: Path) -> None:
        with pytest.raises(phi3.DeviceNotFoundError) as info:
            phi3.load(
                tiny_phi3,
                backend=self.backend,
                device="NO-SUCH-DEVICE-7",
                engine=self.engine,
                precision=self._precisions()[0],
                **self.backend_options,
            )
        assert "NO-SUCH-DEVICE-7" in str(info.value)

    def test_too_long_prompt_is_a_phi3_error(self, loaded_model: phi3.Model) -> None:
        context = loaded_model.context_length
        assert context, "the artifact manifest or session must report the context length"
        model_context, session_context = loaded_model.artifact.context_length, loaded_model.session.context_length
        if model_context and session_context:
            assert session_context <= model_context, "a session cannot hold more than the model supports"
        with pytest.raises(phi3.PromptTooLongError):
            loaded_model.generate("hello world " * (context + 8), max_new_tokens=2)

    # -- cache --------------------------------------------------------------------------------

    def test_second_load_hits_the_cache(self, loaded_model: phi3.Model, tiny_phi3: Path) -> None:
        first = loaded_model.artifact
        with self.load(tiny_phi3) as again:
            assert again.artifact.from_cache
            assert again.artifact.path == first.path
            assert again.artifact.manifest["created"] == first.manifest["created"]
            assert again.generate(PROMPT, max_new_tokens=3, ignore_eos=True).new_tokens == 3

    # -- structured output (see phi3.generation_config and BackendInfo.structured_output) -------

    def _constrained(self, model: phi3.Model, kind: ConstraintKind, **constraint: Any) -> list[GenerationResult]:
        if kind not in model.structured_output:
            pytest.skip(f"{self.backend} does not declare {kind} output (its refusal is tested instead)")
        base = phi3.GenerationConfig(max_new_tokens=self.structured_max_tokens, **constraint)
        configs = [base] + [base.replace(do_sample=True, temperature=1.0, seed=seed) for seed in structured.SEEDS]
        return [model.generate(PROMPT, config) for config in configs]

    def test_undeclared_structured_output_is_refused(self, loaded_model: phi3.Model) -> None:
        requests: dict[str, dict[str, Any]] = {
            "json_schema": {"json_schema": structured.SCHEMAS["flat_required"]},
            "json_object": {"json_object": True},
            "regex": {"regex": structured.REGEX},
        }
        assert set(requests) == set(CONSTRAINT_KINDS)
        for kind, request in requests.items():
            if kind in loaded_model.structured_output:
                continue
            with pytest.raises(phi3.UnsupportedError, match=kind):
                loaded_model.generate(PROMPT, max_new_tokens=4, **request)

    @pytest.mark.parametrize("schema_name", sorted(structured.SCHEMAS))
    def test_json_schema_output_validates(self, loaded_model: phi3.Model, schema_name: str) -> None:
        import jsonschema

        schema = structured.SCHEMAS[schema_name]
        failures = []
        for result in self._constrained(loaded_model, "json_schema", json_schema=schema):
            try:
                assert result.finish_reason != "length", "ran out of tokens before the JSON closed"
                jsonschema.validate(json.loads(result.text), schema)
            except (AssertionError, ValueError, jsonschema.ValidationError) as exc:
                failures.append(f"{result.text!r}: {exc}")
        assert not failures, f"{len(failures)} constrained outputs did not validate: {failures}"

    def test_json_object_output_is_an_object(self, loaded_model: phi3.Model) -> None:
        results = self._constrained(loaded_model, "json_object", json_object=True)
        # "any object" is unbounded: a decode may run out of tokens; every one that closed must parse
        closed = [result for result in results if result.finish_reason != "length"]
        assert closed, f"no json_object decode closed its object within {self.structured_max_tokens} tokens"
        for result in closed:
            assert isinstance(json.loads(result.text), dict), result.text

    def test_regex_output_matches(self, loaded_model: phi3.Model) -> None:
        for result in self._constrained(loaded_model, "regex", regex=structured.REGEX):
            assert result.finish_reason != "length", result.text
            assert re.fullmatch(structured.REGEX, result.text), result.text


__all__ = ["MESSAGES", "PROMPT", "VENDOR_MODULES", "BackendConformanceSuite"]
