"""Child process that runs the ONNX Runtime GenAI model builder through its Python API.

Run as ``python -m phi3_dml._build_worker SPEC.json`` by :mod:`phi3_dml.builder`, never by users.
A child process because the builder imports torch and transformers and holds the whole fp32
checkpoint in memory (15 GB for Phi-3-mini): all of it is returned to the OS when the child exits,
before the parent loads the artifact. It also keeps the builder's prints, tqdm bars and logging
out of the user's stdout (``phi3 quantize --json`` prints JSON there).

The builder's ``--help`` crashes and its CLI is not an API, so it is called from Python:
``parse_extra_options`` (newer builders also load the Hugging Face details there) followed by
``create_model``. Both signatures changed across releases; the two known shapes are handled.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any


def run(spec: dict[str, Any]) -> None:
    """Build the ONNX model described by ``spec`` (keys: source, output, precision,
    execution_provider, cache_dir, extra_options)."""
    from phi3.vendor_compat import hide_broken_torchvision

    # The builder imports transformers' multimodal classes; a CUDA-only torchvision next to a CPU
    # torch (what optimum-intel pulls in when phi3-openvino is installed too) would break them.
    hide_broken_torchvision()
    from onnxruntime_genai.models import builder

    items = [f"{k}={v}" for k, v in spec["extra_options"].items()]
    args = (None, spec["source"], spec["output"], spec["precision"], spec["execution_provider"], spec["cache_dir"])
    params = list(inspect.signature(builder.parse_extra_options).parameters)
    if params[:2] == ["kv_items", "execution_provider"]:  # builder <= 0.13: options only
        extra = builder.parse_extra_options(items, spec["execution_provider"])
    else:  # builder >= 0.14: also resolves the Hugging Face config and tokenizer
        extra = builder.parse_extra_options(*args, items)
    builder.create_model(*args, **extra)


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    run(spec)
    print("PHI3-BUILD-DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
