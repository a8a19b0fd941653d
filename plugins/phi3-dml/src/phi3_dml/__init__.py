"""phi3-dml: the phi3 backend on ONNX Runtime GenAI.

DirectML GPUs on Windows (``onnxruntime-genai-directml``), the CPU execution provider elsewhere
(``onnxruntime-genai``), CUDA when ``onnxruntime-genai-cuda`` is installed. The model builder that
quantizes checkpoints is only needed at quantize time (``pip install "phi3-dml[build]"``).

Importing this package is cheap: nothing here imports onnxruntime, torch or transformers until a
model is quantized, loaded or the runtime's device list is asked for.
"""

__version__ = "0.2.0"

BACKEND_NAME = "dml"
ENGINE_NAME = "genai"
ARTIFACT_FORMAT = "onnx-genai"

__all__ = ["ARTIFACT_FORMAT", "BACKEND_NAME", "ENGINE_NAME", "__version__"]
