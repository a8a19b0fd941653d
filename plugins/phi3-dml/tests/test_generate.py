"""GenerationConfig -> search options, checked by running the real runtime."""

from __future__ import annotations

from pathlib import Path

import phi3
import pytest
from phi3.generation_config import GenerationConfig

from conftest import CHAT, PROMPT, LoadDml
from phi3_dml.options import physical_cores
from phi3_dml.search_options import search_options


def test_ignore_eos_decodes_past_the_eos_a_sampled_run_hits(load_dml: LoadDml) -> None:
    model = load_dml("fp32")
    prompt = model.apply_chat_template(CHAT)
    for seed in range(60):
        config = GenerationConfig(max_new_tokens=40, do_sample=True, temperature=1.5, seed=seed)
        stopped = model.generate(prompt, config)
        if stopped.finish_reason == "eos":
            break
    else:
        pytest.fail("no seed in 0..59 produced an EOS within 40 tokens")
    assert stopped.new_tokens < 40
    assert not set(stopped.token_ids) & model.session.native.eos_ids, "EOS ids are not part of the output"
    longer = model.generate(prompt, config.replace(ignore_eos=True))
    assert longer.new_tokens == 40 and longer.finish_reason == "length"
    assert longer.token_ids[: stopped.new_tokens] == stopped.token_ids, "same draws up to the masked EOS"


def test_seeds_change_sampling_and_top_k_1_is_greedy(load_dml: LoadDml) -> None:
    model = load_dml("fp32")
    greedy = model.generate(PROMPT, max_new_tokens=12, ignore_eos=True)
    runs = {
        model.generate(PROMPT, max_new_tokens=12, ignore_eos=True, do_sample=True, seed=s).token_ids for s in (1, 2, 3)
    }
    assert len(runs) > 1, "different seeds must give different samples"
    top1 = model.generate(PROMPT, max_new_tokens=12, ignore_eos=True, do_sample=True, top_k=1, seed=5)
    assert top1.token_ids == greedy.token_ids
    big_seed = model.generate(PROMPT, max_new_tokens=12, ignore_eos=True, do_sample=True, seed=2**32 - 1)
    assert big_seed.new_tokens == 12  # the runtime takes 31-bit seeds; larger ones are folded


def test_repetition_penalty_reaches_the_runtime(load_dml: LoadDml) -> None:
    model = load_dml("fp32")
    plain = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True)
    assert len(set(plain.token_ids)) < len(plain.token_ids), "the tiny model repeats itself greedily"
    penalised = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True, repetition_penalty=2.0)
    assert penalised.token_ids != plain.token_ids


def test_streaming_yields_each_token_and_the_first_chunk_counts_the_prompt(load_dml: LoadDml) -> None:
    from phi3_dml.generate import generate

    model = load_dml("int4")
    chunks = list(generate(model.session.native, PROMPT, GenerationConfig(max_new_tokens=6, ignore_eos=True)))
    # one chunk per token, then at most one with no token: text the decoder held back (an unfinished
    # character) until the end
    assert [len(c.token_ids) for c in chunks[:6]] == [1] * 6
    assert len(chunks) == 6 or (len(chunks) == 7 and not chunks[6].token_ids and chunks[6].text)
    assert chunks[0].prompt_tokens is not None and chunks[0].prompt_tokens > 1
    assert all(c.prompt_tokens is None for c in chunks[1:])


def test_a_closed_stream_stops_decoding(load_dml: LoadDml) -> None:
    model = load_dml("int4")
    stream = model.stream(PROMPT, max_new_tokens=200, ignore_eos=True)
    next(stream)
    stream.close()
    again = model.generate(PROMPT, max_new_tokens=3, ignore_eos=True)
    assert again.new_tokens == 3


def test_context_is_used_up_to_the_last_token(load_dml: LoadDml) -> None:
    model = load_dml("int4")
    context = model.session.context_length
    assert context == model.artifact.context_length == 512
    encode = model.session.native.encode
    prompt = "a " * 2000
    while len(encode(prompt)) > context - 2:
        prompt = prompt[: int(len(prompt) * 0.9)]
    tokens = len(encode(prompt))
    result = model.generate(prompt, max_new_tokens=50, ignore_eos=True)
    assert result.prompt_tokens == tokens
    assert result.new_tokens == context - tokens, "generation stops at the context, without an error"
    with pytest.raises(phi3.PromptTooLongError, match=f"context is {context}"):
        model.generate("a " * 2000, max_new_tokens=1)


def test_intra_op_threads_load_option(load_dml: LoadDml) -> None:
    model = load_dml("int4", intra_op_num_threads=1)
    assert model.generate(PROMPT, max_new_tokens=4, ignore_eos=True).new_tokens == 4
    assert model.session.details["intra_op_threads"] == "1 (intra_op_num_threads)"


def test_the_cpu_provider_defaults_to_the_physical_cores(load_dml: LoadDml) -> None:
    """Without the option the CPU session gets one thread per physical core this process may use (ONNX
    Runtime's own default ran one thread on a 2-core VM), and says so."""
    cores = physical_cores()
    model = load_dml("int4")
    expected = (
        "default (ONNX Runtime's default)" if cores is None else f"{cores} (the physical cores this process may use)"
    )
    assert model.session.details["intra_op_threads"] == expected


def _fake_topology(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in cores.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n", encoding="ascii")
        (topology / "core_id").write_text(f"{core}\n", encoding="ascii")
    return root


def test_physical_cores_count_each_core_once(tmp_path: Path) -> None:
    # 4 logical CPUs: two cores with two hyper-threads each, on one package
    smt = _fake_topology(tmp_path / "smt", {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    assert physical_cores([0, 1, 2, 3], smt) == 2
    assert physical_cores([0, 2], smt) == 1  # an affinity mask holding one core's two threads
    # two packages whose core ids repeat: four cores
    sockets = _fake_topology(tmp_path / "sockets", {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)})
    assert physical_cores([0, 1, 2, 3], sockets) == 4
    assert physical_cores([0, 1], tmp_path / "missing") is None  # unreadable: ONNX Runtime's default stands


def test_search_options_are_all_explicit() -> None:
    greedy = search_options(GenerationConfig(max_new_tokens=10), prompt_tokens=5, context_length=512)
    assert greedy == {
        "max_length": 15,
        "min_length": 0,
        "do_sample": False,
        "num_beams": 1,
        "batch_size": 1,
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 1,
    }
    sampled = search_options(
        GenerationConfig(
            max_new_tokens=600, do_sample=True, temperature=0.5, top_p=0.9, top_k=0, seed=2**31 + 7, ignore_eos=True
        ),
        prompt_tokens=5,
        context_length=512,
    )
    assert sampled["max_length"] == sampled["min_length"] == 512
    assert (sampled["top_k"], sampled["top_p"], sampled["temperature"], sampled["random_seed"]) == (0, 0.9, 0.5, 7)
