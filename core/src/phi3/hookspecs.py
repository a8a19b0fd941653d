"""The phi3 plugin contract: read this first if you are writing a backend.

A backend is a module registered under the entry-point group ``phi3``; the entry name is the
backend name users type (``phi3 generate MODEL PROMPT -b openvino``)::

    [project.entry-points.phi3]
    openvino = "phi3_openvino.plugin"

The module implements the hooks below with the ``@phi3.hookimpl`` marker. phi3 dispatches every
call to exactly one named backend (other backends' implementations are not called), so a hook
never has to check whether a request is "for it". Every hook is ``firstresult``: the backend's
answer is the answer.

The flow, and who owns what::

    model id ──(phi3 resolves, downloads)──▶ ModelSource
      ──phi3_quantize──▶ files in a temp folder ──(phi3: manifest, atomic rename, lock)──▶ Artifact
      ──phi3_load──▶ SessionHandle ──phi3_generate──▶ Chunk stream ──(phi3: stop strings,
      max_new_tokens, timing)──▶ GenerationResult

phi3 owns model resolution, the artifact cache (keys, locks, atomic writes, manifests), option
validation, stop strings, timing and the CLI. A backend owns only the vendor calls. Required
hooks: ``phi3_backend_info``, ``phi3_quantize``, ``phi3_load``, ``phi3_generate``,
``phi3_apply_chat_template``; a plugin missing one is listed as broken.

Errors: raise :mod:`phi3.errors` classes for anything the user can fix (``DeviceNotFoundError``,
``ConfigError``, ``ArtifactError``, ``PromptTooLongError`` ...). Any other exception is reported as
a one-line ``BackendError`` naming your backend, and the full traceback is kept for ``--debug``.

Versioning: :data:`PLUGIN_API_VERSION` is the contract's version. Set
``BackendInfo.api_version`` to the version you implement; phi3 lists a plugin with another major
version as broken instead of calling hooks whose meaning changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy

from phi3.adapters import LoraAdapter
from phi3.generation_config import GenerationConfig
from phi3.types import (
    Artifact,
    BackendInfo,
    ChatMessage,
    Chunk,
    DeviceInfo,
    LoadRequest,
    Progress,
    QuantizeRequest,
    SessionHandle,
)

PROJECT_NAME = "phi3"
PLUGIN_API_VERSION = 1
"""Bumped when a hook's signature or meaning changes incompatibly."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

REQUIRED_HOOKS = (
    "phi3_backend_info",
    "phi3_quantize",
    "phi3_load",
    "phi3_generate",
    "phi3_apply_chat_template",
)


@hookspec(firstresult=True)
def phi3_backend_info() -> BackendInfo:
    """Describe the backend cheaply: name, engines, devices present, precisions, status.

    Called by ``phi3 list-backends`` and by ``backend="auto"`` for every installed backend, so it
    must be fast and must NOT import a vendor library (OpenVINO, onnxruntime, torch ...): use
    :mod:`phi3.probing` (``find_spec``, distribution versions, device nodes). If a dependency is
    missing, return ``status=MISSING_DEPENDENCY`` with a ``detail`` that names the pip command.
    """


@hookspec(firstresult=True)
def phi3_devices() -> Sequence[DeviceInfo]:
    """Optional: ask the vendor runtime which devices it really sees (may import it).

    Used by ``phi3 devices``, which is allowed to be slow. Without it phi3 shows the devices from
    ``phi3_backend_info``.
    """


@hookspec(firstresult=True)
def phi3_resolve_device(name: str) -> DeviceInfo | None:
    """Optional: accept a device name that is in neither device list, e.g. ``AUTO:GPU,CPU``.

    Called only for names phi3 did not find in ``phi3_backend_info`` or ``phi3_devices``. Return
    the device it denotes, or None (phi3 then raises ``DeviceNotFoundError`` listing the devices).
    """


@hookspec(firstresult=True)
def phi3_quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """Build the artifact for ``request`` into ``output_dir`` (an empty temp folder).

    Write everything the runtime needs (weights, tokenizer, configs) into ``output_dir`` and
    nowhere else. phi3 writes the manifest and atomically renames the folder into the cache only
    after this returns, so a crash or kill here can never leave an artifact a later run trusts.
    Concurrent calls for the same cache key are already serialised by phi3.

    Validate ``request.options`` first and raise ``ConfigError`` before heavy work. Report long
    stages through ``progress(message, completed, total)``.

    Return extra manifest fields (a JSON-serialisable mapping). Include ``context_length`` when
    known: phi3 uses it to explain too-long prompts.
    """


@hookspec(firstresult=True)
def phi3_load(request: LoadRequest) -> SessionHandle:
    """Open ``request.artifact`` on ``request.device`` with ``request.engine``.

    Raise ``DeviceNotFoundError`` (listing the devices that are present) for a device the runtime
    lacks, and ``ArtifactError`` when files are unreadable. Put compiled blobs in
    ``request.cache_dir``. Report the device really used in the returned handle.

    Context length, one rule: ``Artifact.context_length`` is what the model supports;
    ``SessionHandle.context_length`` is what this session really allocated and enforces (never
    more than the artifact's). The session's wins wherever phi3 needs one (``Model.context_length``,
    ``finish_reason="length"``); leave it ``None`` only when it equals the artifact's. A backend
    that cannot allocate a 128k model's whole context reports what it allocated and offers a load
    option to raise it, naming the memory needed when that does not fit.

    Concurrency: set ``SessionHandle.max_concurrent_generations`` to how many ``phi3_generate``
    streams this session can safely run at once (interleaved, or from several threads). The default,
    1, promises nothing: phi3 then never has two of this session's streams open at the same time
    (:class:`phi3.Model` refuses a second with ``ModelBusyError``, ``phi3 serve`` queues it). Say more
    only when the runtime really batches or is re-entrant (e.g. a continuous-batching pipeline).
    """


@hookspec(firstresult=True)
def phi3_generate(session: SessionHandle, prompt: str, config: GenerationConfig) -> Iterator[Chunk]:
    """Generate from an already formatted ``prompt`` (no chat template is applied here).

    Return an iterator of :class:`Chunk` that yields as tokens are decoded (streaming), the first
    chunk carrying ``prompt_tokens``. Honour ``max_new_tokens``, greedy vs sampling, ``seed``,
    ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty`` and ``ignore_eos`` natively.
    ``stop`` strings may be honoured natively, but phi3 also cuts the stream at the first stop
    string and closes the iterator, so support is optional. Raise ``PromptTooLongError`` before
    decoding when the prompt does not fit.

    Structured output: when ``config.output_constraint`` is not ``None``, mask every decoding step
    with a grammar built from it (XGrammar, llguidance ... through your runtime), so the output
    matches. phi3 passes only kinds your ``BackendInfo`` / ``EngineInfo`` / ``SessionHandle``
    ``structured_output`` declares; declare a kind only if you enforce it, never best effort.
    """


@hookspec(firstresult=True)
def phi3_apply_chat_template(
    session: SessionHandle, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None
) -> str:
    """Render ``messages`` with the model's own chat template, ending with the assistant prompt.

    Use the runtime tokenizer's ``apply_chat_template`` (never hand-written Phi-3 markers): the
    template ships with the model and differs across the family.

    Pass every field of a message to the template, not only ``role`` and ``content``: Phi-4-mini's
    template reads a system message's ``tools`` (JSON text), and tool turns carry ``tool_call_id``
    and assistant turns ``tool_calls`` (see :mod:`phi3.tools`).

    ``tools`` (OpenAI's function-tool definitions) is not ``None`` only for a backend that sets
    ``BackendInfo.chat_template_tools``: pass it to the template's ``tools`` variable (templates
    that follow the Hugging Face convention read it). An implementation may leave the parameter out
    of its signature when it does not declare the capability.
    """


@hookspec(firstresult=True)
def phi3_convert_adapter(
    artifact: Artifact, adapter: LoraAdapter, output_dir: Path, progress: Progress
) -> Mapping[str, Any]:
    """Optional: convert a LoRA adapter for this base ``artifact`` into what the runtime loads.

    Only backends that declare ``BackendInfo.adapters`` are asked. ``adapter`` is already checked
    against the base model (:func:`phi3.adapters.read_lora_adapter`); build from its normalised
    weights (``adapter.weights()``: ``W + B @ A`` per module) or a canonical peft folder
    (:func:`phi3.adapters.write_peft_folder`). Write ONLY into ``output_dir`` (an empty temp folder):
    as with ``phi3_quantize``, phi3 renames it into its cache (keyed by backend, ``artifact.key`` and
    ``adapter.content_hash``, under a lock) after this returns, so it runs once per adapter and base,
    and nothing is cached when it raises. Raise :class:`phi3.errors.AdapterError` for an adapter the
    runtime cannot apply. Return extra manifest fields; ``phi3_load`` receives the folder and them
    as ``LoadRequest.adapters[name].path`` / ``.manifest``. Without this hook ``path`` is None and the
    backend reads ``adapter`` itself.
    """


@hookspec(firstresult=True)
def phi3_unload(session: SessionHandle) -> None:
    """Optional: release the session's native resources (called by ``Model.close()``)."""


__all__ = [
    "PLUGIN_API_VERSION",
    "PROJECT_NAME",
    "REQUIRED_HOOKS",
    "hookimpl",
    "hookspec",
]
