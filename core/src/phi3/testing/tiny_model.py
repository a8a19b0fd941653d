"""Tiny, deterministic Phi-3 checkpoints built offline.

Backends are tested against a real ``Phi3ForCausalLM`` checkpoint, but these machines cannot reach a
model hub and a 3.8B model is far too slow for unit tests. This module builds a checkpoint with the
exact file layout, tokenizer pipeline, special tokens and chat template of
``microsoft/Phi-3-mini-4k-instruct`` but with tiny (or benchmark-sized) random weights, so every
converter and runtime sees what it would see on the real model.

Same arguments give byte-identical files, so a cached build can be trusted and test failures
reproduce exactly. Heavy libraries are imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Sequence
from glob import escape as glob_escape
from typing import Any, Final

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "TINY_PHI3_SPECIAL_TOKENS",
    "make_tiny_phi3",
    "mid_size_phi3",
    "tokenizer_vocab_size",
]

#: Phi-3's added tokens, in the order (and so with the relative ids) of the real checkpoint, where
#: they take ids 32000..32010 right after the 32000 SentencePiece pieces.
TINY_PHI3_SPECIAL_TOKENS: Final[tuple[str, ...]] = (
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

#: The chat template of microsoft/Phi-3-mini-4k-instruct, verbatim.
PHI3_CHAT_TEMPLATE: Final[str] = (
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

# Size of the trained vocabulary (<unk>, <s>, </s>, 256 byte tokens, then learned pieces). It is
# fixed so every tiny model shares one tokenizer whatever its vocab_size; the model's embedding
# rows beyond it are padding, as in the real model (32064 rows for 32011 tokens).
_BASE_VOCAB_SIZE: Final = 480
_CONTROL_TOKENS: Final = ("<unk>", "<s>", "</s>")
_BYTE_TOKENS: Final = tuple(f"<0x{b:02X}>" for b in range(256))
_SPACE: Final = "\u2581"  # "▁", SentencePiece's visible space

# Bump when the generated files change for the same arguments, so stale cached builds are rebuilt.
_FORMAT_VERSION: Final = 1
_STAMP_FILE: Final = "phi3-tiny.json"
_DTYPES: Final = ("float32", "float16", "bfloat16")

# Deterministic training text: varied English for realistic merges, accented Latin so such
# letters get their own pieces, and rare emoji/CJK that stay below the alphabet cut-off so they
# exercise byte fallback, as rare characters do in the real tokenizer.
_CORPUS_EN: Final = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "A small language model can still answer simple questions when it runs on a laptop.",
    "Neural processing units accelerate matrix multiplication with little power.",
    "She opened the window, looked at the river, and decided to walk along the bank.",
    "Every morning the baker prepares bread, croissants and a few sweet rolls for the village.",
    "Tokenizers split text into pieces; each piece maps to an integer identifier.",
    "In 1969 two astronauts walked on the Moon and returned safely to the Earth.",
    "Please summarize the following paragraph in three short sentences.",
    "What is the capital of France? The capital of France is Paris.",
    "How many legs does a spider have? A spider has eight legs.",
    "The meeting starts at 10:30 on Monday, March 3rd, in room 204.",
    "Water boils at 100 degrees Celsius at sea level and freezes at 0 degrees.",
    "Write a short poem about the sea, the wind and the light of the evening.",
    "The library keeps old maps, rare books and letters written by famous travellers.",
    "Cats sleep for most of the day, but they become playful and curious at night.",
    "Good software is tested, documented and easy to change when requirements move.",
    "def add(a, b): return a + b  # adds two numbers",
    "for i in range(10): print(i * i)",
    "The weather today is sunny with a light breeze and a temperature of 21 degrees.",
    "Students learn mathematics, history, science, music and several languages at school.",
    "The train to the mountains leaves at seven and arrives before lunch.",
    "He thanked everyone for their help and promised to return next summer.",
    "Memory bandwidth often limits how fast a large model can generate new tokens.",
    "Quantization stores weights with fewer bits, trading a little accuracy for speed.",
    "The garden was full of roses, tulips, daisies and tall green sunflowers.",
    "Once upon a time, a young girl found a golden key hidden under a stone.",
    "You are a helpful assistant. Answer clearly and keep your reply brief.",
    "Explain why the sky is blue in a way that a child can understand.",
    "The orchestra played a symphony, and the audience stood up to applaud.",
    "Keep the receipt, because you may need it if you want to return the shoes.",
)
_CORPUS_ACCENTED: Final = (
    "Le café est très chaud, mais la crème brûlée est déjà prête.",
    "Où est la bibliothèque? Elle se trouve près de la gare, à côté du théâtre.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein, sagt der Schüler.",
    "Die Straße ist nass, und die Bäume verlieren ihre grünen Blätter.",
    "El niño pequeño come una manzana y después juega en el jardín.",
    "¿Dónde está la estación? Está allí, al final de la calle.",
    "A ação começou cedo e a população celebrou a decisão com alegria.",
    "héllo wörld, naïve façade, coöperate, jalapeño, smörgåsbord, résumé.",
)
_CORPUS_RARE: Final = (
    "Emoji: 😀 🎉 🚀 ❤️ 👍 and 🌍.",
    "日本語のテキストと中文文本 and 한국어 텍스트 appear rarely.",
    "Greek αβγ δέλτα, Cyrillic привет мир, math ∑ ∞ ≈ π.",
)


def tokenizer_vocab_size() -> int:
    """Number of token ids the tiny tokenizer uses: its trained pieces plus Phi-3's added tokens.

    A model's ``vocab_size`` (embedding rows) must be at least this.
    """
    return _BASE_VOCAB_SIZE + len(TINY_PHI3_SPECIAL_TOKENS)


def make_tiny_phi3(
    path: str | os.PathLike[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
    dtype: str = "float32",
    sentencepiece_model: bool = False,
) -> pathlib.Path:
    """Build (or reuse) a random-weight Phi-3 checkpoint with a real Phi-3-style tokenizer at ``path``.

    The folder holds what a Phi-3 checkpoint holds: ``config.json``, ``generation_config.json``,
    ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json`` (with the chat template,
    where ONNX Runtime GenAI and older transformers look), ``chat_template.jinja`` (transformers 5's
    place for it), ``special_tokens_map.json`` and, with ``sentencepiece_model=True``, a SentencePiece
    ``tokenizer.model`` (llama.cpp's GGUF converter needs one), in which case ``tokenizer.json`` is
    derived from it so both encode identically.

    The build happens in a temporary sibling folder renamed into place at the end, so an
    interrupted build never leaves a partial model at ``path``. If ``path`` already holds a model
    built with the same arguments (recorded in ``phi3-tiny.json``) it is returned untouched.

    Weights are a seeded normal(0, ``initializer_range``) draw (faster than transformers' default
    init, which matters for the ~650M-parameter :func:`mid_size_phi3`); the padding rows of the
    embedding and LM head beyond the tokenizer's vocabulary are zero, so generation never picks an
    id the tokenizer cannot decode.

    Raises:
        ValueError: an argument is invalid, e.g. ``vocab_size`` is smaller than
            :func:`tokenizer_vocab_size`.
        FileExistsError: ``path`` exists, is not empty and is not a tiny model built here.
        ImportError: torch/transformers/tokenizers (or sentencepiece) are missing.
    """
    target = pathlib.Path(path)
    kv_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
    args: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "seed": seed,
        "dtype": dtype,
        "sentencepiece_model": sentencepiece_model,
    }
    _validate(args)
    stamp = {"format": _FORMAT_VERSION, "generator": "phi3.testing.tiny_model", "args": args}
    if _read_stamp(target) == stamp:
        return target
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and _read_stamp(target) is None)):
        raise FileExistsError(
            f"{target} exists and is not a tiny Phi-3 model built by make_tiny_phi3; not overwriting it"
        )

    _require("torch", "transformers", "tokenizers", *(["sentencepiece"] if sentencepiece_model else []))
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(target)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()  # mode 0o777 & ~umask, unlike tempfile.mkdtemp's 0o700
    try:
        _build(tmp, args)
        _write_json(tmp / _STAMP_FILE, stamp)  # last: its presence marks a complete build
        _normalize_modes(tmp, (tmp / _STAMP_FILE).stat().st_mode & 0o777)
        _install(tmp, target, stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def mid_size_phi3(path: str | os.PathLike[str], seed: int = 0) -> pathlib.Path:
    """Build a benchmark model with Phi-3-mini's per-layer shapes but only 4 layers (~650M params).

    Per-token cost per layer, kernel shapes and vocabulary size match the real model, so
    throughput comparisons between backends are meaningful, while building and converting it
    takes seconds instead of downloading 7.6 GB.
    """
    return make_tiny_phi3(
        path,
        vocab_size=32064,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=4,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------------
# validation, stamp and atomic install


def _validate(args: dict[str, Any]) -> None:
    """Reject arguments that would otherwise fail deep inside torch/transformers with obscure errors."""
    for name in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
    ):
        value = args[name]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(args["seed"], int) or isinstance(args["seed"], bool) or args["seed"] < 0:
        raise ValueError(f"seed must be a non-negative int, got {args['seed']!r}")
    needed = tokenizer_vocab_size()
    if not isinstance(args["vocab_size"], int) or args["vocab_size"] < needed:
        raise ValueError(
            f"vocab_size={args['vocab_size']!r} is too small for the tiny Phi-3 tokenizer, which uses "
            f"{needed} ids ({_BASE_VOCAB_SIZE} trained + {len(TINY_PHI3_SPECIAL_TOKENS)} added tokens); "
            f"use vocab_size >= {needed}"
        )
    if args["hidden_size"] % args["num_attention_heads"]:
        raise ValueError("hidden_size must be divisible by num_attention_heads")
    if args["num_attention_heads"] % args["num_key_value_heads"]:
        raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
    if (args["hidden_size"] // args["num_attention_heads"]) % 2:
        raise ValueError("the head size (hidden_size / num_attention_heads) must be even for rotary embeddings")
    if args["dtype"] not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {args['dtype']!r}")


def _read_stamp(path: pathlib.Path) -> dict[str, Any] | None:
    """The build stamp in ``path``, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads((path / _STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sibling(target: pathlib.Path, kind: str) -> pathlib.Path:
    """A hidden scratch name next to ``target`` (same filesystem, so renames are atomic).

    It embeds our pid so a later build can tell the leftovers of a killed build from a live one.
    """
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex}"


def _remove_dead_builds(target: pathlib.Path) -> None:
    """Delete scratch folders that builds killed midway left next to ``target`` (up to 2.6 GB each).

    Only folders whose owning process no longer exists on this machine are removed.
    """
    for kind in ("tmp", "old"):
        for leftover in target.parent.glob(f".{glob_escape(target.name)}.{kind}-*-*"):
            pid = leftover.name[len(f".{target.name}.{kind}-") :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _install(tmp: pathlib.Path, target: pathlib.Path, stamp: dict[str, Any]) -> None:
    """Move the finished build to ``target`` with renames only, so readers see all or nothing.

    A concurrent builder may win the race; if it built the same thing, its result is kept.
    """
    old: pathlib.Path | None = None
    if target.exists():
        if _read_stamp(target) == stamp:
            return
        if any(target.iterdir()):
            old = _sibling(target, "old")
            target.rename(old)
        else:
            target.rmdir()
    try:
        tmp.rename(target)
    except OSError:
        if _read_stamp(target) != stamp:
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _normalize_modes(folder: pathlib.Path, mode: int) -> None:
    """Give every file the umask-derived ``mode``.

    safetensors writes 0600, which breaks sharing a model folder between users or containers.
    """
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(mode)


def _write_json(path: pathlib.Path, data: Any) -> None:
    """Write JSON the way transformers does (sorted keys, indent 2, UTF-8, final newline)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# build


def _require(*modules: str) -> None:
    """Import-check the optional dependencies up front, with an actionable message."""
    import importlib

    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()  # a CUDA-only torchvision next to CPU torch would break transformers
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"building a tiny Phi-3 model needs {', '.join(missing)}; "
            'install the testing extra: pip install "phi3-core[testing]"'
        )


def _build(out: pathlib.Path, args: dict[str, Any]) -> None:
    """Write tokenizer and model files into the empty folder ``out``."""
    if args["sentencepiece_model"]:
        sp_bytes, vocab, merges = _train_sentencepiece()
        (out / "tokenizer.model").write_bytes(sp_bytes)
    else:
        vocab, merges = _train_bpe()
    ids = _save_tokenizer(out, vocab, merges, model_max_length=args["max_position_embeddings"])
    _save_model(out, args, ids)


def _corpus() -> list[str]:
    """The training lines; repeated so common pairs dominate and rare characters stay rare."""
    return [*(_CORPUS_EN * 3), *(_CORPUS_ACCENTED * 2), *_CORPUS_RARE]


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train Llama-style BPE pieces with ``tokenizers``; return the full base vocab and merges.

    Training splits words at the metaspace (and digits apart, like Llama), as SentencePiece does,
    so no merge crosses a word boundary; the final tokenizer then runs without a pre-tokenizer,
    exactly like Phi-3's tokenizer.json. Control and byte tokens are put in the vocabulary
    directly rather than as trainer special tokens: special tokens vanish on
    ``skip_special_tokens`` decoding, which would eat every byte-fallback character.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    lines = _corpus()
    counts = collections.Counter("".join(_SPACE + line.replace(" ", _SPACE) for line in lines))
    # Rare characters and control characters such as "\n" go through byte fallback, as in Phi-3.
    alphabet = sorted(ch for ch, n in counts.items() if n >= 3 and (ch.isprintable() or ch == _SPACE))
    trainer_tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=_BASE_VOCAB_SIZE - len(_CONTROL_TOKENS) - len(_BYTE_TOKENS),
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
    )
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = {tok: i for i, tok in enumerate((*_CONTROL_TOKENS, *_BYTE_TOKENS))}
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    if len(vocab) != _BASE_VOCAB_SIZE:
        raise RuntimeError(f"tokenizer training produced {len(vocab)} tokens, expected {_BASE_VOCAB_SIZE}")
    merges = [(a, b) for a, b in model["merges"]]
    return vocab, merges


def _train_sentencepiece() -> tuple[bytes, dict[str, int], list[tuple[str, str]]]:
    """Train a SentencePiece BPE model like Llama's/Phi-3's; return it with its vocab and merges.

    Options mirror Llama's tokenizer.model (identity normalization, dummy prefix, no whitespace
    collapsing, split digits, byte fallback). Training is single-threaded from an in-memory
    iterator so the serialized model holds no file path and is reproducible. The merges are
    recovered from piece order (SentencePiece BPE scores pieces by merge order), as transformers'
    converter does, so tokenizer.json encodes like tokenizer.model.
    """
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=_BASE_VOCAB_SIZE,
        character_coverage=0.9995,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=16384,
        minloglevel=2,
    )
    sp_bytes = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    expected_head = [*_CONTROL_TOKENS, *_BYTE_TOKENS]
    if pieces[: len(expected_head)] != expected_head or len(pieces) != _BASE_VOCAB_SIZE:
        raise RuntimeError("unexpected SentencePiece vocabulary layout")
    vocab = {piece: i for i, piece in enumerate(pieces)}
    skip = set(expected_head)
    merges: list[tuple[int, str, str]] = []
    for merged_id, piece in enumerate(pieces):
        if piece in skip:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab and left not in skip and right not in skip:
                merges.append((merged_id, left, right))
    # Rank by the merged piece's id (= SentencePiece's merge order), ties by the halves' ids.
    merges.sort(key=lambda m: (m[0], vocab[m[1]], vocab[m[2]]))
    return sp_bytes, vocab, [(left, right) for _, left, right in merges]


def _special_token_spec() -> list[tuple[str, bool, bool]]:
    """(content, special, rstrip) of every added token, as in Phi-3-mini-4k-instruct's tokenizer."""
    spec = [("<unk>", True, False), ("<s>", True, False), ("</s>", False, True)]
    spec += [(tok, True, tok != "<|endoftext|>") for tok in TINY_PHI3_SPECIAL_TOKENS]
    return spec


def _save_tokenizer(
    out: pathlib.Path, vocab: dict[str, int], merges: Sequence[tuple[str, str]], *, model_max_length: int
) -> dict[str, int]:
    """Assemble Phi-3's tokenizer pipeline around ``vocab``/``merges``, save it; return the token ids.

    The pipeline is the real tokenizer.json's: Prepend("▁") + Replace(" ", "▁") normalizer, no
    pre-tokenizer, BPE with byte fallback, and the Replace/ByteFallback/Fuse/Strip decoder, so
    decoding restores the exact text (including leading spaces and any UTF-8).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import LlamaTokenizerFast

    tok = Tokenizer(
        models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), normalizers.Replace(" ", _SPACE)])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    spec = _special_token_spec()
    for content, special, rstrip in spec:  # add_special_tokens would force special=True on "</s>"
        added = AddedToken(content, special=special, rstrip=rstrip, lstrip=False, normalized=False, single_word=False)
        (tok.add_special_tokens if special else tok.add_tokens)([added])
    contents = [content for content, _, _ in spec]
    expected_ids = [*range(len(_CONTROL_TOKENS)), *range(_BASE_VOCAB_SIZE, tokenizer_vocab_size())]
    if [tok.token_to_id(content) for content in contents] != expected_ids:
        raise RuntimeError("the added tokens did not get Phi-3's ids")
    ids = dict(zip(contents, expected_ids, strict=True))
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", ids["<s>"])]
    )

    hf_tok: Any = LlamaTokenizerFast(
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
        chat_template=PHI3_CHAT_TEMPLATE,
    )
    # save_jinja_files=False keeps the template in tokenizer_config.json, where ONNX Runtime GenAI
    # and older transformers look; chat_template.jinja (transformers 5's place) is written below.
    hf_tok.save_pretrained(str(out), save_jinja_files=False)

    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    # Keys transformers 5 drops but the real checkpoint has and other tools read (ONNX Runtime
    # GenAI / llama.cpp: add_bos_token, added_tokens_decoder).
    config.update(
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": False,
            "chat_template": PHI3_CHAT_TEMPLATE,
            "added_tokens_decoder": {
                str(ids[c]): {
                    "content": c,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": r,
                    "single_word": False,
                    "special": s,
                }
                for c, s, r in spec
            },
        }
    )
    config.pop("backend", None)  # a transformers-5-only key; older readers should see a plain Llama config
    config.pop("add_prefix_space", None)
    _write_json(config_path, config)
    (out / "chat_template.jinja").write_text(PHI3_CHAT_TEMPLATE, encoding="utf-8")
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
    return ids


def _no_init_weights() -> Any:
    """transformers' context manager that skips weight init (it moved in transformers 5)."""
    import contextlib
    import importlib

    for module in ("transformers.initialization", "transformers.modeling_utils"):
        with contextlib.suppress(ImportError, AttributeError):
            return importlib.import_module(module).no_init_weights()
    return contextlib.nullcontext()  # only slower: every tensor is overwritten anyway


def _save_model(out: pathlib.Path, args: dict[str, Any], ids: dict[str, int]) -> None:
    """Create the random-weight Phi3ForCausalLM and save it with config and generation config."""
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    eot, end = ids["<|endoftext|>"], ids["<|end|>"]
    cfg: Any = Phi3Config(
        vocab_size=args["vocab_size"],
        hidden_size=args["hidden_size"],
        intermediate_size=args["intermediate_size"],
        num_hidden_layers=args["num_hidden_layers"],
        num_attention_heads=args["num_attention_heads"],
        num_key_value_heads=args["num_key_value_heads"],
        max_position_embeddings=args["max_position_embeddings"],
        original_max_position_embeddings=args["max_position_embeddings"],
        bos_token_id=ids["<s>"],
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=False,
        sliding_window=None,
    )
    with _no_init_weights():  # skip transformers' slow double init; every tensor is filled below
        model: Any = Phi3ForCausalLM(cfg)
    generator = torch.Generator().manual_seed(args["seed"])
    std = float(cfg.initializer_range)
    used = tokenizer_vocab_size()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, std, generator=generator)
                bias: Any = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
            elif "RMSNorm" in type(module).__name__:
                module.weight.fill_(1.0)
            elif any(True for _ in module.parameters(recurse=False)):
                raise RuntimeError(f"don't know how to initialise {name} ({type(module).__name__})")
        # Unused padding ids: zero rows give a logit of exactly 0, which never beats the max of the
        # real tokens' random logits, so greedy decoding only emits decodable ids.
        model.get_input_embeddings().weight[used:].zero_()
        model.get_output_embeddings().weight[used:].zero_()
    model = model.to(getattr(torch, args["dtype"]))  # save_pretrained records the dtype in config.json
    make_generation_config: Any = GenerationConfig
    model.generation_config = make_generation_config(bos_token_id=ids["<s>"], eos_token_id=[eot, end], pad_token_id=eot)
    model.save_pretrained(str(out))
