"""phi3-llamacpp's public API beyond the hooks (what other packages and tests may import).

- :func:`prefill_logprobs`: log-probabilities of every position of one prefill on a loaded
  session (teacher forcing: the family parity suite's KL rows, quality benchmarks).
- :func:`gguf_path`: the GGUF file inside a phi3-llamacpp artifact (to run llama.cpp on it directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3.errors import ConfigError, PromptTooLongError
from phi3_llamacpp import GGUF_NAME

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def gguf_path(artifact_dir: str | Path) -> Path:
    return Path(artifact_dir) / GGUF_NAME


def prefill_logprobs(model: Any, input_ids: Sequence[int], adapter: str | None = None) -> npt.NDArray[np.float32]:
    """``[len(input_ids), vocab]`` log-probabilities from ONE ``llama_decode`` of ``input_ids``.

    ``model`` is a :class:`phi3.Model` (or its ``SessionHandle``) loaded with backend llamacpp.
    Row ``i`` scores the token after ``input_ids[: i + 1]``, with LoRA ``adapter`` (one the model
    loaded) or the base model (None). The session's KV cache is cleared.
    """
    import numpy as np

    from phi3_llamacpp.generate import start_fresh
    from phi3_llamacpp.session import _runtime

    session = getattr(model, "session", model)
    runtime = _runtime(session)
    ids = [int(i) for i in input_ids]
    if not ids:
        raise ConfigError("input_ids is empty")
    if len(ids) > min(runtime.context_length, runtime.n_batch):
        raise PromptTooLongError(f"{len(ids)} tokens do not fit one batch of {runtime.n_batch} / the context")
    lc, llama = runtime.llama_cpp, runtime.llama
    ctx = llama.ctx
    start_fresh(runtime, adapter)
    batch = lc.llama_batch_init(len(ids), 0, 1)
    try:
        for pos, token in enumerate(ids):
            batch.token[pos] = token
            batch.pos[pos] = pos
            batch.n_seq_id[pos] = 1
            batch.seq_id[pos][0] = 0
            batch.logits[pos] = True
        batch.n_tokens = len(ids)
        code = lc.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(llama.model)))
        rows = [
            np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy() for i in range(len(ids))
        ]
    finally:
        lc.llama_batch_free(batch)
        lc.llama_memory_clear(lc.llama_get_memory(ctx), False)  # metadata only: see generate.start_fresh
    logits = np.asarray(rows, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), dtype=np.float32)


__all__ = ["gguf_path", "prefill_logprobs"]
