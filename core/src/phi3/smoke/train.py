"""Train the smoke model: a BPE tokenizer and a tiny ``Phi3ForCausalLM`` on :mod:`phi3.smoke.corpus`.

``python scripts/train_smoke.py`` (or ``python -m phi3.smoke.train``) rebuilds the checkpoint that
ships in ``phi3/smoke/model``. Training is deterministic for a given torch version and thread count
(CPU, seeded, deterministic algorithms; CI pins torch 2.13.0 and the script uses 2 threads), so a
rebuild reproduces the shipped files.

The tokenizer is Phi-3's pipeline (a ``tokenizers`` BPE with byte fallback, ``▁`` for spaces, no
pre-tokenizer at run time, ``<s>`` added in front, Phi-3's added tokens at the ids right after the
base vocabulary, Phi-3-mini's chat template). The 256 ``<0xNN>`` byte tokens are plain vocabulary
entries, never special tokens (special ones vanish when decoding skips special tokens).

Each example is tokenized the way a backend sees it: the prompt through the real tokenizer after
the chat template (tools rendered by :func:`phi3.tools.generic_messages`), the answer as the model
writes it (JSON without a leading space, as grammar-constrained decoding produces it) and ``<|end|>``.
The answer's tokens carry the loss (the prompt's a quarter of it).

Needs torch, transformers and tokenizers (``pip install "phi3-core[testing]"``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from phi3.smoke import corpus
from phi3.vendor_compat import hide_broken_torchvision

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TrainConfig",
    "build_tokenizer",
    "encode_examples",
    "main",
    "probe_prompts",
    "probe_scores",
    "train",
]

SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)
"""Phi-3's added tokens in the real checkpoint's order (ids right after the base vocabulary)."""

CHAT_TEMPLATE: Final[str] = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|assistant|>\n' }}"
    "{% else %}"
    "{{ eos_token }}"
    "{% endif %}"
)
"""Phi-3-mini-4k-instruct's chat template, verbatim."""

_CONTROL: Final = ("<unk>", "<s>", "</s>")
_BYTES: Final = tuple(f"<0x{b:02X}>" for b in range(256))
_SPACE: Final = "\u2581"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained files (recorded in ``training.json``)."""

    base_vocab: int = 1024
    vocab_size: int = 1088
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 4096
    sliding_window: int | None = 2047
    examples: int = 60000
    steps: int = 5000
    batch_tokens: int = 2048
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    no_bos_share: float = 0.1
    """Share of chat examples trained without ``<s>`` (some runtimes add it, some do not)."""
    prompt_weight: float = 0.25
    """Loss weight of the prompt's tokens (the answer's weigh 1): predicting the prompts too gives
    many more tokens to learn from, above all the copying (names, cities) that the answers need."""
    copy_weight: float = 3.0
    """Loss weight of an answer's tokens that copy a word or digit of the prompt (a city, a name, a
    number): the content the answer depends on, which a tiny model otherwise learns last."""
    tie_word_embeddings: bool = True
    """Phi-4-mini's layout: the LM head is the embedding. A head that moves a prompt token's
    embedding to the answer then predicts that token directly, which is how copying starts."""
    short_steps: int = 1500
    """Curriculum: the first ``short_steps`` steps train on short chats only (at most
    ``short_tokens`` tokens: sums, capitals, names, echoes), where the content is most of the answer;
    the copying learnt there carries over to the long tool prompts of the full mix."""
    short_tokens: int = 64
    short_share: float = 0.5
    """After the curriculum, this share of the batches still comes from the short chats: without it
    the long tool prompts take most of the tokens and the sums and capitals learnt first fade."""
    probe_every: int = 500
    """Log exact-match accuracy on :func:`phi3.smoke.corpus.held_out` every so many steps (0: never)."""
    dtype: str = "float16"


# -- tokenizer --------------------------------------------------------------------------------------


def _tokenizer_text(examples: Iterable[corpus.Example]) -> list[str]:
    """The text the BPE is trained on: every turn and answer, tools as phi3 describes them."""
    from phi3.messages import check_messages
    from phi3.tools import check_request, generic_messages

    lines: list[str] = []
    for example in examples:
        messages: list[dict[str, Any]] = check_messages(list(example.messages))
        if example.tools:
            messages = generic_messages(messages, check_request(list(example.tools), example.tool_choice))
        lines.extend(str(m["content"]) for m in messages)
        lines.append(example.answer)
    return lines


def phi3_tokenizer(tok: Any, model_max_length: int) -> Any:
    """``tok`` (a ``tokenizers.Tokenizer`` in Phi-3's pipeline) as the ``LlamaTokenizerFast`` a Phi-3
    checkpoint ships: its special tokens, BOS added, left padding and chat template (the test kit's
    tiny models are wrapped the same way)."""
    from transformers import LlamaTokenizerFast

    return LlamaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        legacy=False,
        padding_side="left",
        model_max_length=model_max_length,
        chat_template=CHAT_TEMPLATE,
    )


def build_tokenizer(lines: Sequence[str], base_vocab: int, model_max_length: int) -> Any:
    """A Phi-3-style ``LlamaTokenizerFast`` with a BPE trained on ``lines``."""
    hide_broken_torchvision()  # before transformers is first imported: it caches what it found
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    counts: dict[str, int] = {}
    for line in lines:
        for ch in line.replace(" ", _SPACE):
            counts[ch] = counts.get(ch, 0) + 1
    alphabet = sorted(ch for ch, n in counts.items() if n >= 3 and ch.isprintable())
    alphabet = sorted({*alphabet, _SPACE})
    trainer_tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
            # "▁" is its own token, so a word is the same token after a space and inside JSON
            # ("▁Oslo" would be another token than the "Oslo" of {"city":"Oslo"}): copying a word
            # from the question into a tool call is then plain copying, which a tiny model learns
            pre_tokenizers.Split(_SPACE, "isolated"),
            pre_tokenizers.Punctuation("isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab - len(_CONTROL) - len(_BYTES),
        min_frequency=2,
        show_progress=False,
        special_tokens=[],  # never the <0xNN> tokens: special tokens vanish on skip_special_tokens decoding
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
    )
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab = {tok: i for i, tok in enumerate((*_CONTROL, *_BYTES))}
    for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    if len(vocab) > base_vocab:
        raise RuntimeError(f"tokenizer training produced {len(vocab)} tokens, more than {base_vocab}")
    for i in range(len(vocab), base_vocab):  # fewer pieces than asked: pad with unused placeholders
        vocab[f"<unused{i}>"] = i
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), normalizers.Replace(" ", _SPACE)])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    spec = [("<unk>", True, False), ("<s>", True, False), ("</s>", False, True)]
    spec += [(t, True, t != "<|endoftext|>") for t in SPECIAL_TOKENS]
    for content, special, rstrip in spec:
        added = AddedToken(content, special=special, rstrip=rstrip, lstrip=False, normalized=False, single_word=False)
        (tok.add_special_tokens if special else tok.add_tokens)([added])
    expected = [0, 1, 2, *range(base_vocab, base_vocab + len(SPECIAL_TOKENS))]
    if [tok.token_to_id(c) for c, _, _ in spec] != expected:
        raise RuntimeError("the added tokens did not get Phi-3's ids")
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    hf_tok: Any = phi3_tokenizer(tok, model_max_length)
    hf_tok.phi3_spec = spec
    return hf_tok


def save_tokenizer(hf_tok: Any, out: Path) -> None:
    """Phi-3's tokenizer files: tokenizer.json, tokenizer_config.json (with the template, where ONNX
    Runtime GenAI reads it), chat_template.jinja and special_tokens_map.json."""
    hf_tok.save_pretrained(str(out), save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    ids = {c: hf_tok.convert_tokens_to_ids(c) for c, _, _ in hf_tok.phi3_spec}
    config.update(
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": False,
            "chat_template": CHAT_TEMPLATE,
            "added_tokens_decoder": {
                str(ids[c]): {
                    "content": c,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": r,
                    "single_word": False,
                    "special": s,
                }
                for c, s, r in hf_tok.phi3_spec
            },
        }
    )
    config.pop("backend", None)
    config.pop("add_prefix_space", None)
    _write_json(config_path, config)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    _write_json(
        out / "special_tokens_map.json",
        {
            name: {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
            for name, content in (
                ("bos_token", "<s>"),
                ("eos_token", "<|endoftext|>"),
                ("pad_token", "<|endoftext|>"),
                ("unk_token", "<unk>"),
            )
        },
    )


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


# -- encoding ---------------------------------------------------------------------------------------


def _piece_ids(hf_tok: Any, text: str) -> list[int]:
    """``text`` through the BPE alone (no ``▁`` prepended): how a model writes a continuation."""
    model = hf_tok.backend_tokenizer.model
    return [t.id for t in model.tokenize(text.replace(" ", _SPACE))]


def render_prompt(hf_tok: Any, example: corpus.Example) -> str:
    """The prompt text a backend decodes from: phi3's tool rendering, then the chat template."""
    from phi3.messages import check_messages
    from phi3.tools import check_request, generic_messages

    if example.raw:
        return str(example.messages[0]["content"])
    messages: list[dict[str, Any]] = check_messages(list(example.messages))
    if example.tools is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        request = check_request(list(example.tools) if example.tools else None, example.tool_choice)
        messages = generic_messages(messages, request)
    return str(hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def encode_example(hf_tok: Any, example: corpus.Example, bos: bool = True) -> tuple[list[int], int]:
    """(token ids, where the answer starts) for one example."""
    prompt = render_prompt(hf_tok, example)
    ids: list[int] = list(hf_tok(prompt).input_ids)
    if not bos and ids and ids[0] == hf_tok.bos_token_id:
        ids = ids[1:]
    start = len(ids)
    if example.raw:
        ids += [*_piece_ids(hf_tok, example.answer), hf_tok.convert_tokens_to_ids("<|endoftext|>")]
    else:
        answer = example.answer if example.json else " " + example.answer
        ids += [*_piece_ids(hf_tok, answer), hf_tok.convert_tokens_to_ids("<|end|>")]
    return ids, start


def encode_examples(
    hf_tok: Any, examples: Iterable[corpus.Example], no_bos_share: float, seed: int
) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [encode_example(hf_tok, e, bos=e.raw or rng.random() >= no_bos_share) for e in examples]


# -- training ---------------------------------------------------------------------------------------


def _batches(encoded: Sequence[tuple[list[int], int]], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, each batch about ``batch_tokens`` padded tokens."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max([len(encoded[j][0]) for j in current] + [len(encoded[i][0])])
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def _tensors(rows: Sequence[tuple[list[int], int]], config: TrainConfig, pad: int, copyable: set[int]) -> Any:
    """One padded batch: (ids, loss weights, answer mask, attention mask)."""
    import torch

    width = max(len(seq) for seq, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    weights = torch.zeros((len(rows), width))
    answer = torch.zeros((len(rows), width))
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (seq, start) in enumerate(rows):
        ids[row, : len(seq)] = torch.tensor(seq)
        weights[row, 1:start] = config.prompt_weight
        weights[row, start : len(seq)] = 1.0
        prompt_tokens = set(seq[:start])
        for t in range(start, len(seq)):  # a word or digit the answer copies from the prompt
            if seq[t] in copyable and seq[t] in prompt_tokens:
                weights[row, t] = config.copy_weight
        answer[row, start : len(seq)] = 1.0
        mask[row, : len(seq)] = 1
    return ids, weights, answer, mask


def make_model(config: TrainConfig, hf_tok: Any) -> Any:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    eot, bos = hf_tok.convert_tokens_to_ids("<|endoftext|>"), hf_tok.convert_tokens_to_ids("<s>")
    cfg: Any = Phi3Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=config.max_position_embeddings,
        original_max_position_embeddings=config.max_position_embeddings,
        sliding_window=config.sliding_window,
        rope_theta=10000.0,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=bos,
        eos_token_id=eot,
        pad_token_id=eot,
        attn_implementation="sdpa",
    )
    torch.manual_seed(config.seed)
    model = Phi3ForCausalLM(cfg)
    with torch.no_grad():  # rows past the tokenizer are padding: never predicted, never read
        model.get_output_embeddings().weight[config.base_vocab + len(SPECIAL_TOKENS) :].zero_()
        model.get_input_embeddings().weight[config.base_vocab + len(SPECIAL_TOKENS) :].zero_()
    return model


def train(
    config: TrainConfig,
    out: Path,
    *,
    log: Callable[[str], None] = print,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Train and write the checkpoint into ``out`` (created; must not exist); return the training record."""
    hide_broken_torchvision()
    import torch
    from transformers import GenerationConfig

    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    started = time.monotonic()
    examples = list(corpus.examples(config.examples, seed=config.seed))
    hf_tok = build_tokenizer(_tokenizer_text(examples), config.base_vocab, config.max_position_embeddings)
    encoded = encode_examples(hf_tok, examples, config.no_bos_share, config.seed)
    lengths = [len(ids) for ids, _ in encoded]
    log(f"{len(encoded)} examples, {sum(lengths)} tokens, longest {max(lengths)}")
    model = make_model(config, hf_tok)
    params = sum(p.numel() for p in model.parameters())
    log(f"{params / 1e6:.2f}M parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    rng = random.Random(config.seed)
    pad = hf_tok.pad_token_id
    copyable = {i for t, i in hf_tok.get_vocab().items() if t.isalnum() and i < config.base_vocab}
    short = [e for e in encoded if len(e[0]) <= config.short_tokens]
    probes = probe_prompts(hf_tok) if config.probe_every else []
    losses: list[float] = []
    queues: dict[bool, list[list[int]]] = {True: [], False: []}  # batches left: short pool, whole corpus
    model.train()
    step = 0
    for step in range(config.steps):
        from_short = step < config.short_steps or rng.random() < config.short_share
        pool = short if from_short else encoded
        batches = queues[from_short]
        if not batches:
            batches += _batches(pool, config.batch_tokens, rng)
        ids, weights, answer, mask = _tensors([pool[i] for i in batches.pop()], config, pad, copyable)
        lr = config.lr * min(1.0, (step + 1) / config.warmup)
        lr *= 0.5 * (1 + math.cos(math.pi * step / config.steps)) * 0.95 + 0.05
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        token_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
        ).view(ids.shape[0], -1)
        w, a = weights[:, 1:], answer[:, 1:]  # position t predicts token t+1
        loss = (token_loss * w).sum() / w.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float((token_loss.detach() * a).sum() / a.sum()))  # the answers' loss, as reported
        if step % 50 == 0 or step == config.steps - 1:
            recent = sum(losses[-50:]) / len(losses[-50:])
            log(f"step {step:5d}  loss {recent:.4f}  lr {lr:.2e}  {time.monotonic() - started:.0f}s")
        if probes and (step + 1) % config.probe_every == 0:
            log(f"step {step:5d}  held-out exact match: {_format_scores(probe_scores(model, hf_tok, probes))}")
            model.train()
        if time_limit_s is not None and time.monotonic() - started > time_limit_s:
            log(f"time limit reached at step {step}")
            break
    model.eval()
    eot, end, bos = (hf_tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|end|>", "<s>"))
    make_generation_config: Any = GenerationConfig
    model.generation_config = make_generation_config(bos_token_id=bos, eos_token_id=[eot, end], pad_token_id=eot)
    out.mkdir(parents=True)
    model.to(getattr(torch, config.dtype)).save_pretrained(str(out))
    _fix_config(out / "config.json")
    save_tokenizer(hf_tok, out)
    record = {
        "config": asdict(config),
        "torch": torch.__version__,
        "parameters": params,
        "steps_run": step + 1,
        "train_seconds": round(time.monotonic() - started, 1),
        "first_loss": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "examples": len(encoded),
        "tokens": sum(lengths),
    }
    return record


def probe_prompts(hf_tok: Any) -> list[tuple[str, list[int], str]]:
    """(task, prompt ids, expected continuation) for each held-out probe, as training writes answers:
    plain text after a space, tool calls and tool-result answers in phi3's constrained JSON."""
    probes: list[tuple[str, list[int], str]] = []
    for probe in corpus.held_out():
        if probe.task == "tool_call":
            answer, is_json = corpus.compact({"tool_calls": json.loads(probe.expected)}), True
        elif probe.task == "tool_result":
            answer, is_json = corpus.compact({"response": probe.expected}), True
        else:
            answer, is_json = probe.expected, probe.task == "json"
        example = corpus.Example(probe.messages, answer, probe.task, probe.tools, probe.tool_choice, json=is_json)
        ids, start = encode_example(hf_tok, example)
        probes.append((probe.task, ids[:start], hf_tok.decode(ids[start:], skip_special_tokens=True).strip()))
    return probes


def probe_scores(model: Any, hf_tok: Any, probes: Sequence[tuple[str, list[int], str]]) -> dict[str, tuple[int, int]]:
    """Greedy, unconstrained exact match per task: ``{task: (right, asked)}``, ``"all"`` included."""
    import torch

    model.eval()
    scores: dict[str, tuple[int, int]] = {}
    end = hf_tok.convert_tokens_to_ids("<|end|>")
    with torch.no_grad():
        for task, prompt, expected in probes:
            budget = len(hf_tok(expected).input_ids) + 4
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=end,
                pad_token_id=end,
            )
            got = hf_tok.decode(out[0, len(prompt) :], skip_special_tokens=True).strip()
            right, asked = scores.get(task, (0, 0))
            scores[task] = (right + (got == expected), asked + 1)
    scores["all"] = (sum(r for r, _ in scores.values()), sum(n for _, n in scores.values()))
    return scores


def _format_scores(scores: dict[str, tuple[int, int]]) -> str:
    return " ".join(f"{task} {right}/{asked}" for task, (right, asked) in scores.items())


def _fix_config(config_path: Path) -> None:
    """config.json as the microsoft/Phi-3-mini-4k-instruct checkpoint spells it (top-level
    ``rope_theta``, ``rope_scaling`` null), which converters that read the file themselves expect."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    parameters = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = parameters.get("rope_theta", 10000.0)
    config["rope_scaling"] = None
    config.pop("partial_rotary_factor", None)
    _write_json(config_path, config)


def file_sha256(path: Path) -> str:
    """The weights' hash ``training.json`` records (a test checks the shipped file against it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the smoke model (phi3/smoke/model).")
    default_out = Path(__file__).resolve().parent / "model"
    parser.add_argument("--out", type=Path, default=default_out, help="checkpoint folder (replaced)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    args = parser.parse_args(argv)
    config = TrainConfig(steps=args.steps, threads=args.threads)
    tmp = args.out.with_name(args.out.name + f".tmp{os.getpid()}")
    record = train(config, tmp)
    record["sha256"] = file_sha256(tmp / "model.safetensors")
    _write_json(tmp / "training.json", record)
    if args.out.exists():
        shutil.rmtree(args.out)
    os.replace(tmp, args.out)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
