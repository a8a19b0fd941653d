"""Teacher-forced log-probabilities of an exported OpenVINO IR, for quality measurements.

GenAI's ``LLMPipeline`` does not return logits, so quality (KL against the transformers fp32
reference) is measured on the IR itself through optimum-intel, in f32 on the CPU: the number
describes the artifact's weights (its quantization recipe), whichever device later runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def ir_logprobs(folder: Path, input_ids: Sequence[int]) -> npt.NDArray[np.float32]:
    """``[len(input_ids), vocab]`` log-probabilities from ONE forward of the IR in ``folder``.

    Row ``i`` scores the token after ``input_ids[: i + 1]``. ``folder`` is a phi3-openvino (or
    phi3-npu genai) artifact: ``openvino_model.xml`` with its ``config.json``.
    """
    import numpy as np
    import torch
    from optimum.intel import OVModelForCausalLM

    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()
    model = OVModelForCausalLM.from_pretrained(
        str(folder),
        device="CPU",
        ov_config={"INFERENCE_PRECISION_HINT": "f32"},
        compile=True,
        trust_remote_code=False,
        local_files_only=False,  # as the optimum engine: HF_HUB_OFFLINE would make optimum treat it as a hub id
    )
    ids = torch.tensor([list(input_ids)])
    with torch.no_grad():
        logits = model(ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    return np.asarray(torch.log_softmax(logits, dim=-1).numpy(), dtype=np.float32)


__all__ = ["ir_logprobs"]
