"""The shipped smoke model: a toy Phi-3 trained on phi3.smoke.corpus that answers readably.

Behaviour is checked through the public API on the reference backend (transformers fp32, greedy):
a sum, a two-turn conversation, a tool call it chooses on its own (tool_choice auto) and the use of
the tool's result, and JSON, with the right content (the capital, the name, the city). The files are
checked for the layout and tokenizer a Phi-3 checkpoint has and against the training record, and the
training code is checked to teach content (a smaller model, under two minutes).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import phi3
from phi3 import smoke
from phi3.smoke import corpus

WEATHER = corpus.WEATHER_TOOL


def test_the_checkpoint_ships_with_phi3_layout_and_tokenizer() -> None:
    folder = smoke.checkpoint()
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size < 8_000_000, f"the shipped smoke model is {size} bytes"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["Phi3ForCausalLM"] and config["model_type"] == "phi3"
    # Phi-3-mini-4k's layout, scaled down in width and depth, with Phi-4-mini's tied embeddings
    assert (config["max_position_embeddings"], config["sliding_window"], config["rope_scaling"]) == (4096, 2047, None)
    assert config["num_key_value_heads"] == config["num_attention_heads"] and config["tie_word_embeddings"]
    assert config["hidden_size"] % 128 == 0 and config["intermediate_size"] % 128 == 0  # int4 group sizes divide
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer["model"]["type"] == "BPE" and tokenizer["model"]["byte_fallback"]
    added = {t["content"]: t for t in tokenizer["added_tokens"]}
    assert {"<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"} <= set(added)
    assert not any(name.startswith("<0x") for name in added), "byte tokens must not be added/special tokens"
    assert "<|assistant|>" in (folder / "chat_template.jinja").read_text(encoding="utf-8")


def test_smoke_tokenizer_round_trips_rare_characters() -> None:
    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()  # before transformers is first imported (it caches what it found)
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smoke.checkpoint()))
    text = "héllo wörld 😀, what is the weather in Oslo?"
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert len(tokenizer.tokenize("What is the weather in Oslo?")) <= 14  # words (and spaces) are pieces


def test_resolving_smoke_needs_neither_the_test_kit_nor_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from phi3.sources import resolve_model\n"
        f"source = resolve_model('smoke', Path({str(tmp_path)!r}))\n"
        "assert source.model_id == 'phi3:smoke' and (source.path / 'model.safetensors').is_file()\n"
        "assert not {'phi3.testing', 'torch'} & set(sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def model() -> Any:
    pytest.importorskip("torch")
    pytest.importorskip("llguidance", reason="tool calls and JSON need structured output (phi3-core[structured])")
    from phi3 import plugins
    from phi3.testing import reference_backend

    registry = plugins.get_registry()
    if "reference" not in registry.names():
        registry.register(reference_backend, "reference")
    loaded = phi3.load("smoke", backend="reference", precision="fp32")
    yield loaded
    loaded.close()


def ask(model: Any, messages: list[dict[str, Any]], **options: Any) -> Any:
    return model.chat(messages, max_new_tokens=options.pop("max_new_tokens", 64), **options)


SUM = re.compile(r"\d+ \+ \d+ = \d+\.")


def test_it_answers_a_sum_in_its_format(model: Any) -> None:
    result = ask(model, [{"role": "user", "content": "What is 2 + 3?"}])
    assert SUM.fullmatch(result.text.strip()) and result.finish_reason == "eos", result.text


def test_it_says_who_it_is_and_greets(model: Any) -> None:
    assert "smoke" in ask(model, [{"role": "user", "content": "Who are you?"}]).text
    assert ask(model, [{"role": "user", "content": "Hello!"}]).text.strip() == corpus.GREETING


def test_it_holds_a_two_turn_conversation(model: Any) -> None:
    history = [{"role": "user", "content": "My name is Anna."}]
    first = ask(model, history)
    assert first.text.startswith("Nice to meet you"), first.text
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What is my name?"}]
    assert ask(model, history).text.strip() == "Your name is Anna."


def _tool_turns(call: Any, content: str) -> list[dict[str, Any]]:
    arguments = json.dumps(call.arguments)
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": content},
    ]


def test_it_calls_the_weather_tool_on_its_own_and_answers_after_the_result(model: Any) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    called = ask(model, history, tools=[WEATHER], tool_choice="auto", max_new_tokens=80)
    assert called.finish_reason == "tool_calls", called.text
    (call,) = called.tool_calls
    assert call.name == "get_weather" and isinstance(call.arguments["city"], str)
    history += _tool_turns(call, "sunny, 18 degrees")
    answered = ask(model, history, tools=[WEATHER], tool_choice="auto", max_new_tokens=80)
    assert answered.finish_reason in ("stop", "eos") and not answered.tool_calls
    assert answered.text.startswith("The weather in "), answered.text


def test_it_answers_in_words_when_no_tool_fits(model: Any) -> None:
    result = ask(model, [{"role": "user", "content": "Hello!"}], tools=[WEATHER], tool_choice="auto")
    assert not result.tool_calls and result.text == corpus.GREETING


def test_it_answers_json_when_asked(model: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"country": {"type": "string"}, "capital": {"type": "string"}},
        "required": ["country", "capital"],
    }
    messages = [{"role": "user", "content": "What is the capital of France? Answer as JSON."}]
    assert set(json.loads(ask(model, messages, json_schema=schema).text)) == {"country", "capital"}
    free = ask(model, messages)  # no constraint: the model writes the JSON itself
    assert isinstance(json.loads(free.text), dict), free.text
    person = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    named = json.loads(ask(model, [{"role": "user", "content": "Alice, as JSON"}], json_schema=person).text)
    assert isinstance(named["name"], str)


def test_it_answers_with_the_right_content(model: Any) -> None:
    assert ask(model, [{"role": "user", "content": "What is 2 + 3?"}]).text.strip() == "2 + 3 = 5."
    capital = ask(model, [{"role": "user", "content": "What is the capital of France?"}]).text.strip()
    assert capital == "The capital of France is Paris."
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    (call,) = ask(model, history, tools=[WEATHER], tool_choice="auto", max_new_tokens=80).tool_calls
    assert call.arguments == {"city": "Oslo"}
    history += _tool_turns(call, "sunny, 18 degrees")
    answered = ask(model, history, tools=[WEATHER], tool_choice="auto", max_new_tokens=80).text
    # the city from the question and the weather from the result; the toy often miscopies a
    # two-digit number (here 28 for 18: benchmarks/SMOKE_ACCURACY.md, tool_result row)
    assert re.fullmatch(r"The weather in Oslo is sunny, \d+ degrees\.", answered), answered


def test_the_shipped_weights_are_the_recorded_training_run() -> None:
    from phi3.smoke import train

    folder = smoke.checkpoint()
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    assert record["sha256"] == train.file_sha256(folder / "model.safetensors")
    assert record["config"] == dataclasses.asdict(train.TrainConfig()), "retrain: python scripts/train_smoke.py"


def test_the_training_code_learns_to_copy_the_prompts_content(tmp_path: Path) -> None:
    """A smaller model, retrained for under two minutes on the short chats: it answers held-out
    capital questions right. The country has to be read from the question (a model that ignores the
    prompt's content gets about 1 in 24), so this fails if the training stops teaching content."""
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi3.smoke import train

    config = train.TrainConfig(
        hidden_size=96,
        intermediate_size=256,
        num_attention_heads=3,
        examples=20000,
        steps=800,
        short_steps=800,  # all of it on the short chats (about 100 s on one thread; 5 of 10 at 500 steps)
        warmup=20,
        threads=1,
        probe_every=0,
        dtype="float32",
    )
    record = train.train(config, tmp_path / "model", log=lambda _: None)
    # first_loss: the mean of the first 20 steps; final_loss: of the last 50
    assert record["final_loss"] < 0.25 * record["first_loss"], record
    assert json.loads((tmp_path / "model" / "config.json").read_text(encoding="utf-8"))["hidden_size"] == 96
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "model"))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), dtype=torch.float32)
    capitals = [p for p in train.probe_prompts(tokenizer) if p[0] == "capital"]
    right, asked = train.probe_scores(model, tokenizer, capitals)["capital"]
    assert asked == 10 and right >= 6, (right, asked)


def test_the_corpus_is_deterministic() -> None:
    first = [e.answer for e in corpus.examples(200, seed=3)]
    assert first == [e.answer for e in corpus.examples(200, seed=3)]
    assert first != [e.answer for e in corpus.examples(200, seed=4)]
    tasks = {e.task for e in corpus.examples(2000)}
    assert {"tool_call", "tool_result", "tool_answer", "json", "multi_turn", "arith", "capital"} <= tasks
