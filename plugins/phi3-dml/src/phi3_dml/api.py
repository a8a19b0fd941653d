"""phi3-dml's public API for tools outside the plugin (quality benchmarks, other test suites).

- :func:`teacher_forced_logprobs`: log-probabilities of one prefill of a loaded model.
- :func:`default_intra_op_threads`: the intra-op thread count phi3-dml gives CPU sessions by default,
  so that a benchmark's direct ONNX Runtime GenAI call runs with the same.

The phi3 API does not expose logits (no backend has to); measuring quantization quality needs them.
This module is the one documented place that reaches into a loaded phi3-dml model for them, so
benchmarks and tests never depend on the plugin's private modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import phi3


def teacher_forced_logprobs(
    model: phi3.Model, input_ids: Sequence[int], adapter: str | None = None
) -> npt.NDArray[np.float32]:
    """Log-probabilities ``[len(input_ids), vocab]`` of a phi3-dml model from ONE prefill
    (``adapter``: one of the LoRA adapters the model was loaded with; None: the base model).

    Row ``i`` scores the token after ``input_ids[: i + 1]``: ONNX Runtime GenAI returns the whole
    ``[1, len, vocab]`` logits of a prefill through ``Generator.get_output("logits")``.
    """
    import numpy as np

    if model.backend != "dml":
        raise ValueError(f"teacher_forced_logprobs needs a phi3-dml model, got backend {model.backend!r}")
    runtime = model.session.native
    og = runtime.og
    params = og.GeneratorParams(runtime.model)
    params.set_search_options(max_length=len(input_ids) + 1, do_sample=False)
    generator = og.Generator(runtime.model, params)
    if adapter is not None:
        generator.set_active_adapter(runtime.adapters, adapter)
    try:
        generator.append_tokens(np.asarray(list(input_ids), dtype=np.int32))
        logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0]
    finally:
        del generator
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), dtype=np.float32)


def default_intra_op_threads() -> int | None:
    """The intra-op threads phi3-dml gives a CPU-provider session by default: one per physical core this
    process may use (None where the CPU topology cannot be read: ONNX Runtime's own default then)."""
    from phi3_dml.options import physical_cores

    return physical_cores()


__all__ = ["default_intra_op_threads", "teacher_forced_logprobs"]
