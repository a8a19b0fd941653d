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

from phi3.smoke.train import CHAT_TEMPLATE, SPECIAL_TOKENS, phi3_tokenizer

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "TINY_PHI3_SPECIAL_TOKENS",
    "make_tiny_phi3",
    "mid_size_phi3",
    "tokenizer_vocab_size",
]

#: Phi-3's added tokens (ids 32000..32010 in the real checkpoint) and microsoft/Phi-3-mini-4k-instruct's
#: chat template, verbatim: the product's smoke model is built with the same ones (phi3.smoke.train),
#: which the test kit reuses rather than keeping a copy.
TINY_PHI3_SPECIAL_TOKENS: Final[tuple[str, ...]] = SPECIAL_TOKENS
PHI3_CHAT_TEMPLATE: Final[str] = CHAT_TEMPLATE

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
    vocab_size: int | None = None,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_hidden_layers: int | None = None,
    num_attention_heads: int | None = None,
    num_key_value_heads: int | None = None,
    max_position_embeddings: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    sentencepiece_model: bool = False,
    variant: str | None = None,
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

    Without ``variant`` the layout is the historical smoke model (vocab 512, hidden 64, FFN 128,
    2 layers, 4 heads, 512 positions, no window, no rope scaling). ``variant`` names a catalogue
    entry (see :data:`phi3.testing.variants.VARIANTS`): the config then mirrors that checkpoint's
    layout, scaled down (sliding window, LongRoPE tables and attention scale, GQA, partial rotary,
    tied embeddings, Phi-4-mini's byte-level tokenizer), and the weights are *discriminating*
    (:mod:`phi3.testing.discriminating`): attention depends on position and top-1 margins are
    large, so a wrong rotary embedding or window changes the greedy ids. Dimension arguments
    override the variant's.

    A ``vocab_size`` left unset that would collide with a projection width (see ``_validate``)
    is raised to the next free multiple of 32.

    Raises:
        ValueError: an argument is invalid, e.g. ``vocab_size`` is smaller than
            :func:`tokenizer_vocab_size` or equals a projection's width.
        FileExistsError: ``path`` exists, is not empty and is not a tiny model built here.
        ImportError: torch/transformers/tokenizers (or sentencepiece) are missing.
    """
    target = pathlib.Path(path)
    explicit = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": max_position_embeddings,
    }
    args = _resolve_args(explicit, variant)
    args.update({"seed": seed, "dtype": dtype, "sentencepiece_model": sentencepiece_model})
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


_LEGACY_DIMS: Final[dict[str, int]] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}
# Bump when a variant's files change for the same arguments (kept apart from _FORMAT_VERSION so the
# historical default model's stamp, and so every cached default build, stays valid).
_VARIANT_FORMAT_VERSION: Final = 3  # 3: tiny Phi-4-mini's tool tokens are not special (as in the real one)


def _resolve_args(explicit: dict[str, int | None], variant_name: str | None) -> dict[str, Any]:
    """Dimensions from the explicit arguments, else the variant's, else the historical defaults."""
    from phi3.testing.variants import variant

    base: dict[str, Any] = dict(_LEGACY_DIMS)
    if variant_name is not None:
        fields = variant(variant_name).config_fields()
        base = {name: fields[name] for name in (*_LEGACY_DIMS, "num_key_value_heads")}
    args = {name: base.get(name) if value is None else value for name, value in explicit.items()}
    if args["num_key_value_heads"] is None:
        args["num_key_value_heads"] = args["num_attention_heads"]
    if explicit["vocab_size"] is None and _colliding_widths(args):
        args["vocab_size"] = _free_vocab_size(args)
    if variant_name is not None:
        args["variant"] = variant_name
        args["variant_format"] = _VARIANT_FORMAT_VERSION
    return args


def _projection_widths(args: dict[str, Any]) -> dict[str, int]:
    """Output widths of every Linear in a Phi-3 layer (what a converter may mistake for the LM head)."""
    heads, kv_heads, hidden = args["num_attention_heads"], args["num_key_value_heads"], args["hidden_size"]
    head_dim = hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else 0
    inter = args["intermediate_size"]
    return {
        "hidden_size (o_proj, down_proj)": hidden,
        "q+k+v (qkv_proj)": (heads + 2 * kv_heads) * head_dim,
        "k or v": kv_heads * head_dim,
        "intermediate_size": inter,
        "2 x intermediate_size (gate_up_proj)": 2 * inter,
    }


def _colliding_widths(args: dict[str, Any]) -> list[str]:
    """Projection widths equal to ``vocab_size``.

    ONNX Runtime GenAI's model builder (0.18.0) takes "any Linear whose out width equals
    vocab_size" as the LM head, so such a tiny model gets its logits wired to a gate/up
    projection. Real checkpoints never collide; tiny ones must not either.
    """
    try:
        return [name for name, width in _projection_widths(args).items() if width == args["vocab_size"]]
    except TypeError:  # not ints: _validate reports that
        return []


def _free_vocab_size(args: dict[str, Any]) -> int:
    """The smallest multiple of 32 at or above the requested vocab size that collides with nothing."""
    size = int(args["vocab_size"])
    widths = set(_projection_widths(args).values())
    while size in widths:
        size += 32
    return size


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
    needed = _tokenizer_size(args)
    if not isinstance(args["vocab_size"], int) or args["vocab_size"] < needed:
        raise ValueError(
            f"vocab_size={args['vocab_size']!r} is too small for the tiny Phi-3 tokenizer, which uses "
            f"{needed} ids (trained pieces + added tokens); use vocab_size >= {needed}"
        )
    if args["hidden_size"] % args["num_attention_heads"]:
        raise ValueError("hidden_size must be divisible by num_attention_heads")
    if args["num_attention_heads"] % args["num_key_value_heads"]:
        raise ValueError("num_attention_heads must be divisible by num_key_value_heads")
    if (args["hidden_size"] // args["num_attention_heads"]) % 2:
        raise ValueError("the head size (hidden_size / num_attention_heads) must be even for rotary embeddings")
    if args["dtype"] not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {args['dtype']!r}")
    collisions = _colliding_widths(args)
    if collisions:
        raise ValueError(
            f"vocab_size={args['vocab_size']} equals the width of {', '.join(collisions)}: converters that find "
            "the LM head by its width (ONNX Runtime GenAI's builder) would take that projection for it; "
            f"pick another vocab_size (e.g. {_free_vocab_size(args)})"
        )
    if args.get("variant") is not None:
        from phi3.testing.variants import variant

        tiny = variant(args["variant"])
        if tiny.longrope and args["hidden_size"] % args["num_attention_heads"] == 0:
            head_dim = args["hidden_size"] // args["num_attention_heads"]
            if int(head_dim * tiny.partial_rotary_factor) != tiny.rotary_dim:
                raise ValueError(
                    f"variant {tiny.name!r} needs head_dim {tiny.head_dim} (its LongRoPE tables have "
                    f"{tiny.rotary_dim // 2} entries); got hidden_size/num_attention_heads = {head_dim}"
                )
        if args["sentencepiece_model"] and tiny.tokenizer != "llama":
            raise ValueError(f"variant {tiny.name!r} has a byte-level tokenizer; sentencepiece_model is for Phi-3's")


def _tokenizer_size(args: dict[str, Any]) -> int:
    """Ids the model's tokenizer uses (Phi-3's or, for the phi4-mini variant, Phi-4's)."""
    if args.get("variant") is not None:
        from phi3.testing.variants import variant

        if variant(args["variant"]).tokenizer == "phi4":
            from phi3.testing.bytelevel_tokenizer import phi4_tokenizer_vocab_size

            return phi4_tokenizer_vocab_size()
    return tokenizer_vocab_size()


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
    if args.get("variant") is not None:
        from phi3.testing.variants import variant

        if variant(args["variant"]).tokenizer == "phi4":
            from phi3.testing.bytelevel_tokenizer import build_phi4_tokenizer

            ids = build_phi4_tokenizer(
                out, _corpus(), model_max_length=args["max_position_embeddings"], write_json=_write_json
            )
            _save_model(out, args, {**ids, "<s>": ids["<|endoftext|>"]})
            return
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

    hf_tok: Any = phi3_tokenizer(tok, model_max_length)
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
    dims = {name: args[name] for name in (*_LEGACY_DIMS, "num_key_value_heads")}
    layout: dict[str, Any] = {
        "original_max_position_embeddings": args["max_position_embeddings"],
        "tie_word_embeddings": False,
        "sliding_window": None,
    }
    if args.get("variant") is not None:
        from phi3.testing.variants import variant

        layout = {k: v for k, v in variant(args["variant"]).config_fields().items() if k not in dims}
    cfg: Any = Phi3Config(**dims, **layout, bos_token_id=ids["<s>"], eos_token_id=eot, pad_token_id=eot)
    with _no_init_weights():  # skip transformers' slow double init; every tensor is filled below
        model: Any = Phi3ForCausalLM(cfg)
    generator = torch.Generator().manual_seed(args["seed"])
    if args.get("variant") is not None:
        from phi3.testing.discriminating import fill_discriminating

        fill_discriminating(model, cfg, generator, _tokenizer_size(args))
        model = model.to(getattr(torch, args["dtype"]))
        eos = [end, eot] if variant(args["variant"]).tokenizer == "phi4" else [eot, end]
        make_config: Any = GenerationConfig
        model.generation_config = make_config(bos_token_id=ids["<s>"], eos_token_id=eos, pad_token_id=eot)
        model.save_pretrained(str(out))
        _write_real_rope_layout(out / "config.json", layout)
        return
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


def _write_real_rope_layout(config_path: pathlib.Path, layout: dict[str, Any]) -> None:
    """Rewrite transformers 5's ``rope_parameters`` as the real checkpoints spell it.

    The microsoft/* config.json files have a top-level ``rope_theta`` (and, for Phi-4-mini,
    ``partial_rotary_factor``) and ``rope_scaling`` = null or ``{"type": "longrope", "short_factor",
    "long_factor"}``; converters that read config.json themselves (or older transformers) must see
    that layout, and transformers 5 reads it back to the same rope parameters.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("rope_parameters", None)
    config["rope_theta"] = layout["rope_theta"]
    config["rope_scaling"] = layout.get("rope_scaling")
    config["original_max_position_embeddings"] = layout["original_max_position_embeddings"]
    config["sliding_window"] = layout["sliding_window"]
    if layout["partial_rotary_factor"] != 1.0:
        config["partial_rotary_factor"] = layout["partial_rotary_factor"]
    else:
        config.pop("partial_rotary_factor", None)
    _write_json(config_path, config)
