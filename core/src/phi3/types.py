"""The typed values that cross the plugin contract.

Read this with :mod:`phi3.hookspecs`. Data flows model id -> :class:`ModelSource` ->
:class:`QuantizeRequest` -> :class:`Artifact` -> :class:`LoadRequest` -> session -> :class:`Chunk`
stream -> :class:`GenerationResult`. All of these are frozen dataclasses with primitive fields so
that a plugin built against one phi3-core release keeps working with the next one of the same
contract version (:data:`phi3.hookspecs.PLUGIN_API_VERSION`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from phi3.adapters import PreparedAdapter

DeviceKind = Literal["npu", "gpu", "cpu"]
"""What kind of silicon a device is. ``backend="auto"`` prefers npu > gpu > cpu."""

FinishReason = Literal["eos", "length", "stop", "tool_calls"]
"""Why generation ended: an end-of-sequence token, ``max_new_tokens``, a stop string, or (chat with
``tools``) the model called one or more tools (:attr:`GenerationResult.tool_calls`)."""

ChatMessage = Mapping[str, Any]
"""One chat turn, ``{"role": "user" | "assistant" | "system" | "tool", "content": "..."}``.

``content`` is a string. An assistant turn that called tools carries ``tool_calls`` (OpenAI's
shape: ``[{"id", "type": "function", "function": {"name", "arguments": JSON text}}]``) and a
``tool`` turn carries the result in ``content`` and the call's ``tool_call_id``."""

ConstraintKind = Literal["json_schema", "json_object", "regex"]
"""What a structured-output request constrains decoding to (see :class:`OutputConstraint`)."""

CONSTRAINT_KINDS: tuple[ConstraintKind, ...] = ("json_schema", "json_object", "regex")

SamplingControl = Literal["min_p"]
"""An optional sampling control a backend may apply (see :attr:`BackendInfo.sampling`). The
baseline every backend applies (temperature, top_k, top_p, repetition_penalty, seed) is not listed."""

SAMPLING_CONTROLS: tuple[SamplingControl, ...] = ("min_p",)


@dataclass(frozen=True)
class OutputConstraint:
    """What :attr:`phi3.GenerationConfig.output_constraint` hands a backend: decode only text that
    matches this. Built and validated by phi3 from the config's ``json_schema`` / ``json_object`` /
    ``regex`` fields; a backend maps it onto its runtime's constrained decoding.

    ``kind="json_schema"``: ``spec`` is the JSON Schema as compact JSON text (vendor APIs take text).
    ``kind="json_object"``: any JSON object; ``spec`` is ``{"type": "object"}`` so that a runtime with
    only a JSON-Schema entry point can enforce it. ``kind="regex"``: ``spec`` is the pattern, which
    must match the whole output (no lookaround or backreferences: the regex subset every
    grammar engine shares).
    """

    kind: ConstraintKind
    spec: str


class BackendStatus(str, enum.Enum):
    """Whether a backend can run here, as shown by ``phi3 list-backends``."""

    AVAILABLE = "available"
    """Installed, its dependencies import, and at least one device it targets by default is present."""
    NO_DEVICE = "no device"
    """Installed and importable, but its target hardware is absent (it may still run with an
    explicit ``device=`` override; see :attr:`BackendInfo.override_devices`)."""
    MISSING_DEPENDENCY = "missing dependency"
    """A vendor library it needs is not installed; ``BackendInfo.detail`` says which and how."""
    BROKEN = "broken"
    """The plugin failed to import, to register, or its probe raised. Set by phi3, not by plugins."""


@dataclass(frozen=True)
class DeviceInfo:
    """A device a backend can run on.

    ``name`` is what the user passes as ``device=`` (the vendor's own spelling, e.g. ``"CPU"``,
    ``"GPU.1"``, ``"NPU"``, ``"dml:0"``).
    """

    name: str
    kind: DeviceKind
    description: str = ""
    driver_version: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    """One way a backend runs a model (e.g. OpenVINO's ``genai`` and ``optimum`` engines).

    Engines whose ``artifact_format`` is equal share a cached artifact; different formats get
    different cache keys.
    """

    name: str
    description: str = ""
    available: bool = True
    detail: str = ""
    """Why the engine is unavailable and how to fix it, e.g. ``pip install "phi3-npu[library]"``."""
    artifact_format: str = ""
    library_versions: Mapping[str, str] | None = None
    """The vendor distributions this engine's artifacts depend on, when they differ from the
    backend's (``BackendInfo.library_versions``). They replace the backend's in the artifact cache
    key, so upgrading a library one engine does not use does not invalidate its artifacts."""
    structured_output: tuple[ConstraintKind, ...] | None = None
    """The :data:`ConstraintKind` values this engine enforces while decoding, when they differ from
    the backend's (``BackendInfo.structured_output``); ``None`` inherits the backend's."""
    sampling: tuple[SamplingControl, ...] | None = None
    """The optional sampling controls this engine applies, when they differ from the backend's
    (``BackendInfo.sampling``); ``None`` inherits the backend's."""
    adapters: bool | None = None
    """Whether this engine applies LoRA adapters, when it differs from the backend's
    (``BackendInfo.adapters``); ``None`` inherits the backend's."""


OptionType = Literal["int", "float", "bool", "str", "choice", "mapping"]
"""The value types an :class:`OptionSpec` declares."""


@dataclass(frozen=True)
class OptionSpec:
    """One backend option (``-O name=value``, ``phi3.load(..., name=value)``), declared in
    :attr:`BackendInfo.options` and validated by phi3 before the backend sees it.

    phi3 coerces the user's value to ``type`` (``"64"`` -> 64, ``"true"`` -> True, JSON text -> a
    mapping), checks the range / choices and the engine and precision it applies to, and refuses
    anything else with one line naming the option, the value and what is allowed. A backend
    receives only checked values of the declared type (or one of ``choices`` for ``int``/``float``
    options that also take keywords such as ``"auto"``), so it writes no validators of its own;
    checks that need the model (a group size that must divide its widths) stay in the backend.
    """

    name: str
    type: OptionType
    help: str = ""
    default: Any = None
    """The value the backend uses when the option is not given (documentation: phi3 does not
    insert it, so that artifacts built without the option keep their cache key)."""
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    """``min`` itself is not allowed (e.g. a ratio in (0, 1])."""
    choices: tuple[Any, ...] = ()
    """``type="choice"``: the allowed values (strings match case-insensitively). ``int``/``float``:
    extra values accepted besides the range, e.g. ``("auto",)`` or ``(-1,)``."""
    aliases: Mapping[str, Any] = field(default_factory=dict)
    """Extra spellings mapped to a value, e.g. ``{"sym": True, "asym": False}`` for a bool."""
    artifact: bool = False
    """The option changes the artifact's bytes: it goes into the cache key and to ``phi3_quantize``
    (else it goes to ``phi3_load``)."""
    engines: tuple[str, ...] = ()
    """The engines it applies to (empty: every engine)."""
    precisions: tuple[str, ...] = ()
    """The precisions it applies to (empty: every precision)."""

    def allowed(self) -> str:
        """What the option takes, in words (used by errors and ``phi3 list-backends``)."""
        extra = [str(choice) for choice in self.choices]
        if self.type == "bool":
            return "true or false"
        if self.type == "choice":
            return "one of " + ", ".join(extra)
        if self.type == "mapping":
            return "a mapping of names to strings or numbers (JSON text on the command line)"
        if self.type == "str":
            return "text"
        kind = "a whole number" if self.type == "int" else "a number"
        low = "" if self.min is None else f"{'>' if self.exclusive_min else '>='} {self.min:g}"
        high = "" if self.max is None else f"<= {self.max:g}"
        bounds = " and ".join(part for part in (low, high) if part)
        text = f"{kind} {bounds}".strip()
        return text + (f", or {' or '.join(extra)}" if extra else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``phi3 list-backends --json``."""
        default = self.default
        if not isinstance(default, (str, int, float, bool, type(None))):
            default = str(default)
        return {
            "name": self.name,
            "type": self.type,
            "help": self.help,
            "default": default,
            "min": self.min,
            "max": self.max,
            "exclusive_min": self.exclusive_min,
            "choices": list(self.choices),
            "allowed": self.allowed(),
            "artifact": self.artifact,
            "engines": list(self.engines),
            "precisions": list(self.precisions),
        }


@dataclass(frozen=True)
class BackendInfo:
    """What a backend's cheap probe (:func:`phi3.hookspecs.phi3_backend_info`) reports.

    Building it must not import a vendor library: use :mod:`phi3.probing` helpers
    (``importlib.util.find_spec``, ``importlib.metadata``, device nodes) instead.
    """

    name: str
    description: str
    engines: tuple[EngineInfo, ...]
    devices: tuple[DeviceInfo, ...]
    """Devices actually present that this backend uses without being told to."""
    precisions: tuple[str, ...]
    """Precisions ``phi3_quantize`` accepts, best default first (e.g. ``("int4", "int8", "fp16")``)."""
    status: BackendStatus
    detail: str = ""
    """Human explanation of ``status`` that names the fix when it is not ``available``."""
    override_devices: tuple[DeviceInfo, ...] = ()
    """Devices that work only when the user asks for them explicitly (e.g. the NPU backend's CPU
    fallback). ``auto`` never picks these: phi3 has no silent fallbacks."""
    library_versions: Mapping[str, str] = field(default_factory=dict)
    """Vendor distributions and their versions (from ``importlib.metadata``). They are part of the
    artifact cache key, so upgrading the library re-quantizes instead of loading a stale artifact.
    phi3 adds the backend's own distribution and version to the key itself (from its entry point):
    upgrading a plugin whose code shapes the artifact re-quantizes too."""
    artifact_options: tuple[str, ...] = ()
    """Names of backend options that change the artifact (e.g. ``group_size``). They go into the
    cache key and to ``phi3_quantize``."""
    load_options: tuple[str, ...] = ()
    """Names of backend options ``phi3_load`` accepts (e.g. ``ov_config``). An option in neither
    list is refused with a message listing both, before any work starts."""
    options: tuple[OptionSpec, ...] = ()
    """Typed declarations of the backend's options, validated by phi3 before any hook sees them
    (see :class:`OptionSpec`). Each spec's name is added to ``artifact_options`` or
    ``load_options`` (by its ``artifact`` flag), so a backend that declares specs leaves those two
    empty. Names listed there without a spec still pass through unchecked (the older contract)."""
    api_version: int = 1
    """The plugin contract version this backend was written for."""
    priority: int = 0
    """Tie-breaker for ``backend="auto"`` between backends offering the same device kind."""
    structured_output: tuple[ConstraintKind, ...] = ()
    """The kinds of :class:`OutputConstraint` this backend *enforces* during decoding (every token
    masked by a grammar), for engines that do not say otherwise. phi3 refuses a request for any
    other kind before ``phi3_generate`` is called: a backend never receives a constraint it did not
    declare, and best effort is never presented as a guarantee."""
    sampling: tuple[SamplingControl, ...] = ()
    """The optional :data:`SamplingControl` values this backend applies (e.g. ``("min_p",)`` where its
    runtime has a min-p sampler). phi3 refuses a config that sets one the model's engine does not
    declare (:meth:`phi3.Model.check_supported`) before ``phi3_generate`` is called, so a backend never
    receives, say, ``min_p > 0`` it would silently ignore."""
    chat_template_tools: bool = False
    """``phi3_apply_chat_template`` passes its ``tools`` argument to the chat template's ``tools``
    variable (the Hugging Face convention of templates such as Llama 3.1's or Qwen's). The Phi-3
    family does not need it: Phi-4-mini's template reads the tools from the system message's own
    ``tools`` field, which :mod:`phi3.tools` fills, so every backend must pass message fields other
    than ``role``/``content`` through to the template unchanged."""
    adapters: bool = False
    """The backend applies LoRA adapters (``phi3.load(..., adapters=...)``, ``LoadRequest.adapters``,
    ``GenerationConfig.adapter``; see :mod:`phi3.adapters`). phi3 refuses adapters for a backend or
    engine that does not declare it, naming those that do. ``phi3 list-backends`` shows it."""

    def __post_init__(self) -> None:
        if self.options:
            artifact = tuple(spec.name for spec in self.options if spec.artifact)
            load = tuple(spec.name for spec in self.options if not spec.artifact)
            merged_artifact = (*self.artifact_options, *(n for n in artifact if n not in self.artifact_options))
            merged_load = (*self.load_options, *(n for n in load if n not in self.load_options))
            object.__setattr__(self, "artifact_options", merged_artifact)
            object.__setattr__(self, "load_options", merged_load)

    def option(self, name: str) -> OptionSpec | None:
        """The spec declared for option ``name``, if any."""
        for spec in self.options:
            if spec.name == name:
                return spec
        return None

    @property
    def default_engine(self) -> str | None:
        """The first available engine: the one used when the user names none."""
        for engine in self.engines:
            if engine.available:
                return engine.name
        return None

    def engine(self, name: str) -> EngineInfo | None:
        for engine in self.engines:
            if engine.name == name:
                return engine
        return None


@dataclass(frozen=True)
class ModelSource:
    """A Phi-3 checkpoint resolved to a local folder, with the identity that keys the cache."""

    path: Path
    """Local folder holding config.json, weights and tokenizer files."""
    model_id: str
    """The Hugging Face id (``microsoft/Phi-3-mini-4k-instruct``) or the folder's resolved path."""
    revision: str
    """The hub commit hash, or ``sha256:<hex>`` content hash of a local folder."""


@dataclass(frozen=True)
class QuantizeRequest:
    """What ``phi3_quantize`` is asked to build."""

    source: ModelSource
    precision: str
    engine: str
    options: Mapping[str, Any]
    """Only the options named in :attr:`BackendInfo.artifact_options`."""
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Artifact:
    """A finished, manifest-bearing artifact folder (in the cache, or a user-named output)."""

    path: Path
    backend: str
    precision: str
    artifact_format: str
    key: str
    manifest: Mapping[str, Any]
    from_cache: bool = False
    """True when an earlier run built it: this load did no quantization."""

    @property
    def context_length(self) -> int | None:
        """What the model supports (the manifest's ``context_length``); a session may hold less."""
        value = self.manifest.get("context_length")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class LoadRequest:
    """What ``phi3_load`` is asked to open."""

    artifact: Artifact
    engine: str
    device: str
    options: Mapping[str, Any]
    """Backend options not in ``artifact_options`` (e.g. OpenVINO's ``ov_config``)."""
    cache_dir: Path
    """A per-backend folder inside phi3's cache for compiled blobs and the like: a backend must not
    write anywhere else (never into the user's working directory)."""
    adapters: Mapping[str, PreparedAdapter] = field(default_factory=dict)
    """Every LoRA adapter of this model by name, checked against the base and converted by the
    backend's ``phi3_convert_adapter`` (when it has one): set the runtime up for all of them here;
    ``GenerationConfig.adapter`` picks one per generation. Empty unless the backend declares
    ``BackendInfo.adapters``. A weighted mix the user asked for arrives as one more ordinary adapter
    (its ``LoraAdapter.weights()`` already hold the mix, rank = the components' sum; ``.mix`` lists them),
    so a backend applies it like any other."""


@dataclass(frozen=True)
class Chunk:
    """One piece of a generation stream as ``phi3_generate`` yields it.

    ``token_ids`` are the new tokens this piece covers (possibly several, possibly none when a
    backend flushes buffered text); ``text`` their decoded text, which may be empty while a
    multi-byte character is incomplete. The first chunk carries ``prompt_tokens``.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    """One tool call a chat with ``tools`` produced: ``arguments`` already parsed, and valid
    against the tool's parameter schema because decoding was constrained to it."""

    id: str
    name: str
    arguments: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class GenerationResult:
    """Everything a finished generation reports."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    time_to_first_token_s: float
    decode_tokens_per_s: float
    """New tokens after the first divided by the time after the first token (0.0 for < 2 tokens)."""
    total_s: float
    backend: str
    engine: str
    device: str
    """The device that really ran the model, as the backend reports it."""
    precision: str
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model called (chat with ``tools``); ``text`` is then what it said besides."""
    adapter: str | None = None
    """The LoRA adapter this generation used (``GenerationConfig.adapter``); None: the base model."""

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``--json`` output."""
        return {
            "text": self.text,
            "token_ids": list(self.token_ids),
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "finish_reason": self.finish_reason,
            "time_to_first_token_s": self.time_to_first_token_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "total_s": self.total_s,
            "backend": self.backend,
            "engine": self.engine,
            "device": self.device,
            "precision": self.precision,
            "tool_calls": [call.as_dict() for call in self.tool_calls],
            "adapter": self.adapter,
        }


class Progress(Protocol):
    """How a backend reports long work (export, weight compression) to the user.

    phi3 renders it as a progress bar on stderr in the CLI and ignores it in quiet API use.
    """

    def __call__(self, message: str, completed: int | None = None, total: int | None = None) -> None:
        """Report a stage (``message``) and, where known, how far along it is."""


@dataclass
class SessionHandle:
    """What ``phi3_load`` returns: the backend's live model plus the facts phi3 reports.

    ``native`` is the backend's own object (an ``LLMPipeline``, an ``og.Model`` ...). phi3 never
    touches it; it hands the handle back to the same backend's ``phi3_generate``,
    ``phi3_apply_chat_template`` and ``phi3_unload``.
    """

    backend: str
    engine: str
    device: str
    """The device really used (e.g. ``"CPU"`` when ``AUTO`` resolved to it)."""
    native: Any
    context_length: int | None = None
    """Tokens this session really holds (its KV cache), when less than the artifact's
    ``context_length``; it wins over the artifact's (see ``phi3_load`` in :mod:`phi3.hookspecs`)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Anything else worth showing the user (provider, ov_config actually applied, ...)."""
    max_concurrent_generations: int = 1
    """How many generations this session can run at the same time (see
    :func:`phi3.hookspecs.phi3_load`). 1, the default, means one at a time: phi3 refuses a second
    concurrent stream on the same :class:`phi3.Model` and ``phi3 serve`` queues it instead."""
    structured_output: tuple[ConstraintKind, ...] | None = None
    """What this session really enforces, when narrower than its engine's declaration (e.g. a
    device whose pipeline has no grammar support); ``None`` keeps the engine's / backend's."""


__all__ = [
    "CONSTRAINT_KINDS",
    "SAMPLING_CONTROLS",
    "Artifact",
    "BackendInfo",
    "BackendStatus",
    "ChatMessage",
    "Chunk",
    "ConstraintKind",
    "DeviceInfo",
    "DeviceKind",
    "EngineInfo",
    "FinishReason",
    "GenerationResult",
    "LoadRequest",
    "ModelSource",
    "OptionSpec",
    "OptionType",
    "OutputConstraint",
    "Progress",
    "QuantizeRequest",
    "SamplingControl",
    "SessionHandle",
    "ToolCall",
]
