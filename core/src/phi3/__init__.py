"""phi3: run the Phi-3 family on AI-PC accelerators through one API.

>>> import phi3
>>> model = phi3.load("phi3-mini-4k", backend="auto")       # doctest: +SKIP
>>> print(model.chat([{"role": "user", "content": "Hi"}]).text)  # doctest: +SKIP

Importing phi3 is cheap: no vendor library (OpenVINO, onnxruntime, torch) is imported until a
backend loads or quantizes a model.
"""

from phi3._version import __version__
from phi3.api import load, quantize
from phi3.errors import (
    AdapterError,
    ArtifactError,
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConfigError,
    DeviceNotFoundError,
    ModelBusyError,
    ModelNotFoundError,
    Phi3Error,
    PluginError,
    PrecisionNotSupportedError,
    PromptTooLongError,
    UnsupportedError,
)
from phi3.generation_config import GenerationConfig
from phi3.hookspecs import PLUGIN_API_VERSION, hookimpl, hookspec
from phi3.model import Model, TextStream
from phi3.plugins import BackendEntry, backends
from phi3.types import (
    Artifact,
    BackendInfo,
    BackendStatus,
    ChatMessage,
    Chunk,
    DeviceInfo,
    EngineInfo,
    GenerationResult,
    LoadRequest,
    ModelSource,
    OptionSpec,
    OutputConstraint,
    Progress,
    QuantizeRequest,
    SessionHandle,
    ToolCall,
)

__all__ = [
    "PLUGIN_API_VERSION",
    "AdapterError",
    "Artifact",
    "ArtifactError",
    "BackendEntry",
    "BackendError",
    "BackendInfo",
    "BackendNotFoundError",
    "BackendStatus",
    "BackendUnavailableError",
    "ChatMessage",
    "Chunk",
    "ConfigError",
    "DeviceInfo",
    "DeviceNotFoundError",
    "EngineInfo",
    "GenerationConfig",
    "GenerationResult",
    "LoadRequest",
    "Model",
    "ModelBusyError",
    "ModelNotFoundError",
    "ModelSource",
    "OptionSpec",
    "OutputConstraint",
    "Phi3Error",
    "PluginError",
    "PrecisionNotSupportedError",
    "Progress",
    "PromptTooLongError",
    "QuantizeRequest",
    "SessionHandle",
    "TextStream",
    "ToolCall",
    "UnsupportedError",
    "__version__",
    "backends",
    "hookimpl",
    "hookspec",
    "load",
    "quantize",
]
