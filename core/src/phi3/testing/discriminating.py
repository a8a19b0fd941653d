"""Weights that make a tiny Phi-3 tell a correct computation from a subtly wrong one.

Small normal(0, 0.02) weights give near-uniform attention and near-tied logits: a wrong RoPE base,
an ignored sliding window or the wrong LongRoPE table then leave the greedy ids unchanged (the
attention output is an average whatever the positions), while harmless rounding can flip a
near-tie. These weights do the opposite:

- every token embedding shares a component ``c`` on the first quarter of the hidden dims, so
  queries and keys share a part whose dot product depends only on the rotary angle between the
  two positions: some attention is purely positional, and so sensitive to every RoPE detail;
- query/key projections are scaled up so attention logits spread over several units (peaked,
  position-dependent attention, also across the sliding window's edge and far back);
- values/outputs are unit scale so attention moves the residual stream as much as the token
  embedding does, and the LM head is scaled so the top-1 logit margin is large;
- the final norm is zero on ``c``'s dims, so the shared component never reaches the logits
  (with tied embeddings it would otherwise shift every real token against the zero padding rows),
  and +-1 at random elsewhere: with tied embeddings a positive norm makes the current token's own
  embedding its best logit, and greedy decoding repeats one token forever.

:func:`phi3.testing.variants.MISTAKES` plus the kit's own tests check that this works: each
modelled mistake changes the reference's greedy ids.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fill_discriminating"]

QK_SCALE = 1.5
"""Multiplier on the 1/sqrt(hidden) std of the query and key projections.

2.0 made attention so peaked that whole-model fp16 (torch, CPU) flipped tokens in 2 of 16 parity
rows; 1.0 let an ignored sliding window go unnoticed; 1.5 catches every modelled mistake and kept
all 16 fp16 rows exact."""
SHARED = 1.5
"""Size (per dim) of the component all token embeddings share."""
LOGIT_SCALE = 4.0
"""Multiplier on the 1/sqrt(hidden) std of the LM head (untied models)."""


def fill_discriminating(model: Any, config: Any, generator: Any, used: int) -> None:
    """Overwrite every parameter of ``model`` (a Phi3ForCausalLM) in place, deterministically.

    Rows at and above ``used`` (ids the tokenizer never produces) are zero in the embedding and the
    LM head, so greedy decoding only emits decodable ids.
    """
    import torch

    hidden, inter = int(config.hidden_size), int(config.intermediate_size)
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
    head_dim = hidden // heads
    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    shared_dims = max(1, hidden // 4)
    inv = 1.0 / math.sqrt(hidden)

    def normal(shape: tuple[int, ...], std: float) -> Any:
        return torch.randn(shape, generator=generator, dtype=torch.float32) * std

    with torch.no_grad():
        embed = normal((int(config.vocab_size), hidden), 1.0)
        shared = torch.zeros(hidden)
        shared[:shared_dims] = SHARED * torch.sign(normal((shared_dims,), 1.0))
        embed += shared
        embed[used:] = 0.0
        model.get_input_embeddings().weight.copy_(embed)
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat(
                [
                    normal((q_width, hidden), QK_SCALE * inv),
                    normal((kv_width, hidden), QK_SCALE * inv),
                    normal((kv_width, hidden), inv),
                ]
            )
            attn.qkv_proj.weight.copy_(qkv)
            attn.o_proj.weight.copy_(normal(tuple(attn.o_proj.weight.shape), 1.0 / math.sqrt(q_width)))
            mlp.gate_up_proj.weight.copy_(normal((2 * inter, hidden), inv))
            mlp.down_proj.weight.copy_(normal((hidden, inter), 0.5 / math.sqrt(inter)))
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        final = torch.sign(normal((hidden,), 1.0))
        final[:shared_dims] = 0.0
        model.model.norm.weight.copy_(final)
        if config.tie_word_embeddings:
            # transformers 5 does not tie under no_init_weights: share the tensor so only one is saved
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
        else:
            head = normal((int(config.vocab_size), hidden), LOGIT_SCALE * inv)
            head[used:] = 0.0
            model.get_output_embeddings().weight.copy_(head)
        for name, param in model.named_parameters():
            if param.dim() == 1 and "norm" not in name:
                raise RuntimeError(f"don't know how to initialise {name}")
