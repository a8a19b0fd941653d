"""Phi-4-mini's tokenizer layout, tiny: GPT-2-style byte-level BPE, no BOS, Phi-4 special tokens.

Phi-4-mini does not use Phi-3's SentencePiece-style pipeline: its tokenizer.json is byte-level BPE
(every byte is a token, no byte fallback, no "▁"), ``tokenizer_config.json`` names
``GPT2Tokenizer``, nothing is prepended to a prompt (``<|endoftext|>`` is bos, eos, pad and unk
at once) and the chat template puts tool definitions in the system turn. Runtimes that assume
Phi-3's tokenizer (a leading ``<s>``, "▁" spaces) break on it, so the tiny Phi-4-mini has the
same layout.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "PHI4_CHAT_TEMPLATE",
    "PHI4_SPECIAL_TOKENS",
    "PHI4_TOOL_TOKENS",
    "build_phi4_tokenizer",
    "phi4_tokenizer_vocab_size",
]

#: Phi-4-mini's added tokens in id order (real ids: <|endoftext|> 199999, then 200019..200028).
PHI4_SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<|endoftext|>",
    "<|assistant|>",
    "<|end|>",
    "<|user|>",
    "<|system|>",
    "<|tool|>",
    "<|/tool|>",
    "<|tool_call|>",
    "<|/tool_call|>",
    "<|tool_response|>",
    "<|tag|>",
)

#: The added tokens of the tool format, which the real tokenizer.json does not mark ``special``: a
#: decode with ``skip_special_tokens`` keeps them, so a tool call's ``<|tool_call|>`` reaches the
#: text (ONNX Runtime GenAI's README tells users to flip them to special for its own tool parsing;
#: vLLM's and BFCL's Phi-4-mini parsers read them from decoded text).
PHI4_TOOL_TOKENS: Final[frozenset[str]] = frozenset(
    ("<|tool|>", "<|/tool|>", "<|tool_call|>", "<|/tool_call|>", "<|tool_response|>", "<|tag|>")
)

#: microsoft/Phi-4-mini-instruct's chat template: no newlines, tools inside the system turn.
PHI4_CHAT_TEMPLATE: Final[str] = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|assistant|>' }}"
    "{% else %}"
    "{{ eos_token }}"
    "{% endif %}"
)

# Trained byte-level vocabulary: 256 byte tokens plus merges.
_BASE_VOCAB_SIZE: Final = 480


def phi4_tokenizer_vocab_size() -> int:
    """Token ids the tiny Phi-4-mini tokenizer uses (trained pieces + added tokens)."""
    return _BASE_VOCAB_SIZE + len(PHI4_SPECIAL_TOKENS)


def build_phi4_tokenizer(
    out: pathlib.Path, lines: list[str], *, model_max_length: int, write_json: Callable[[pathlib.Path, Any], None]
) -> dict[str, int]:
    """Train on ``lines``, save the tokenizer files into ``out`` and return the added tokens' ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=_BASE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer=trainer)
    if tok.get_vocab_size() != _BASE_VOCAB_SIZE:
        raise RuntimeError(f"byte-level training produced {tok.get_vocab_size()} tokens, expected {_BASE_VOCAB_SIZE}")
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # adds nothing: no BOS
    for t in PHI4_SPECIAL_TOKENS:  # one at a time, in id order; add_special_tokens forces special=True
        added = AddedToken(t, special=t not in PHI4_TOOL_TOKENS, normalized=False)
        (tok.add_tokens if t in PHI4_TOOL_TOKENS else tok.add_special_tokens)([added])
    ids = {t: int(tok.token_to_id(t)) for t in PHI4_SPECIAL_TOKENS}
    if list(ids.values()) != list(range(_BASE_VOCAB_SIZE, phi4_tokenizer_vocab_size())):
        raise RuntimeError("the added tokens did not get consecutive ids after the trained vocabulary")

    hf_tok: Any = GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        add_bos_token=False,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        chat_template=PHI4_CHAT_TEMPLATE,
    )
    hf_tok.save_pretrained(str(out), save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        {
            "add_bos_token": False,
            "add_eos_token": False,
            "chat_template": PHI4_CHAT_TEMPLATE,
            "added_tokens_decoder": {
                str(i): {
                    "content": t,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": t not in PHI4_TOOL_TOKENS,
                }
                for t, i in ids.items()
            },
        }
    )
    config.pop("backend", None)
    write_json(config_path, config)
    (out / "chat_template.jinja").write_text(PHI4_CHAT_TEMPLATE, encoding="utf-8")
    write_json(
        out / "special_tokens_map.json",
        {
            name: {
                "content": "<|endoftext|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            }
            for name in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
    )
    return ids
