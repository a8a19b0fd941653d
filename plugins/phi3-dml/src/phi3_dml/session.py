"""``phi3_load``: open an artifact with ONNX Runtime GenAI on the provider the user asked for.

Everything that can be checked from files is checked before the runtime is touched, so a broken
cache entry is an :class:`~phi3.errors.ArtifactError` naming the file and the fix, not a C++
message: the genai_config.json must parse, the model files it names must be there, and the
installed runtime must be new enough for the configs (:func:`phi3_dml.compat.check_runtime`).
Errors the runtime still raises while opening are translated the same way.

Tokenization follows the checkpoint, not the runtime's defaults: onnxruntime-genai's tokenizer does
not add the BOS token even when the model's tokenizer config says ``add_bos_token: true`` (Phi-3's
does), while transformers, which the model was trained with, does. The session adds it, so the
model sees the same ids as under transformers (and greedy output matches the fp32 reference).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from phi3 import probing
from phi3.cache import rebuild_hint
from phi3.errors import ArtifactError, BackendError, BackendUnavailableError, ConfigError, DeviceNotFoundError
from phi3.types import LoadRequest

from phi3_dml import adapters, compat, guidance, probe, providers
from phi3_dml.engine import DmlEngine
from phi3_dml.options import physical_cores

GIB = 1024**3


def _detokenizer(folder: Path) -> Any:
    """``tokenizers.Tokenizer`` from the artifact's tokenizer.json (see ``Runtime.detokenizer``)."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ArtifactError(f"{path} is unreadable: {' '.join(str(exc).split())[:200]}", hint=_fix(folder)) from None


def import_runtime() -> ModuleType:
    """``onnxruntime_genai``, or BackendUnavailableError with the install command."""
    try:
        return importlib.import_module("onnxruntime_genai")
    except ImportError as exc:
        package = probe.DIRECTML_PACKAGE if probing.is_windows() else probe.CPU_PACKAGE
        raise BackendUnavailableError(
            f"onnxruntime-genai cannot be imported: {exc}", hint=f"pip install {package}"
        ) from None


def _fix(folder: Path) -> str:
    """Core's fix for a damaged artifact: ``phi3 cache rm KEY`` in PHI3_HOME, else ``quantize -o DIR --overwrite``."""
    return rebuild_hint(folder)


_JSON_FILES = ("genai_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _broken_file(folder: Path, text: str) -> Path | None:
    """Which artifact file onnxruntime-genai choked on: one of its JSON files that does not parse, else one its
    message names (``Load model from .../model.onnx failed``), else None."""
    for name in _JSON_FILES:
        path = folder / name
        try:
            json.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return path
    named = [p for p in sorted(folder.iterdir(), key=lambda p: -len(p.name)) if p.is_file() and p.name in text]
    return named[0] if named else None


def _read_json(path: Path, key: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"the artifact has no {path.name} ({path})", hint=_fix(path.parent)) from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is corrupt: {exc}", hint=_fix(path.parent)) from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is corrupt: not a JSON object", hint=_fix(path.parent))
    return data


def _check_files(folder: Path, genai: Mapping[str, Any], manifest: Mapping[str, Any], key: str) -> None:
    decoder = genai.get("model", {}).get("decoder", {}) if isinstance(genai.get("model"), dict) else {}
    filename = decoder.get("filename") if isinstance(decoder, dict) else None
    if not isinstance(filename, str):
        raise ArtifactError(f"{folder / 'genai_config.json'} names no decoder model", hint=_fix(folder))
    wanted = [filename, *(manifest.get("model_files") or [])]
    for name in dict.fromkeys(wanted):
        if not (folder / name).is_file():
            raise ArtifactError(f"the artifact {folder} is missing {name}", hint=_fix(folder))


def _translate(exc: Exception, folder: Path, device: providers.Device) -> Exception:
    """A phi3 error for a runtime failure while opening the model."""
    text = " ".join(str(exc).split())
    if "not been built with DML" in text or "not been built with CUDA" in text:
        return DeviceNotFoundError(f"device {device.name!r}: {text}", hint=providers.why_missing(device.provider))
    device_markers = {
        "dml": ("DXGI", "D3D12", "adapter", "DirectML.dll"),
        "cuda": ("cudaError", "CUDA failure", "CUDA error", "no CUDA-capable device", "libcudart"),
    }
    if any(marker in text for marker in device_markers.get(device.provider, ())):
        return DeviceNotFoundError(
            f"device {device.name!r} could not be opened: {text}",
            hint=providers.why_missing(device.provider)
            + " (for dml:N / cuda:N, N must be an existing adapter: see phi3 devices)",
        )
    unreadable = (  # onnxruntime-genai 0.18.0's words for a file it cannot parse or open
        "JSON Error",
        "json.exception",  # nlohmann::json, e.g. "[json.exception.parse_error.101] parse error at line 1"
        "Unknown value",
        "Unsupported tokenizer",
        "genai_config",
        "tokenizer",
        "Load model from",
        "No such file",
        "external data",
        "Protobuf parsing",
        "invalid model",
        "Invalid model",
        "model.onnx",
    )
    if any(marker in text for marker in unreadable):
        broken = _broken_file(folder, text)
        where = f"artifact file {broken}" if broken is not None else f"the artifact {folder}"
        return ArtifactError(f"onnxruntime-genai cannot read {where}: {text}", hint=_fix(folder))
    return BackendError(
        f"onnxruntime-genai could not open the model on {device.name}: {text}",
        hint="run with --debug for the full traceback",
    )


def _chat_template(folder: Path, tokenizer_config: Mapping[str, Any]) -> str | None:
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # transformers' named templates: [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str) and template:
        return template
    jinja = folder / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None


def _adds_bos(folder: Path, tokenizer_config: Mapping[str, Any]) -> bool:
    """Whether transformers would start the prompt with BOS for this tokenizer."""
    flag = tokenizer_config.get("add_bos_token")
    if isinstance(flag, bool):
        return flag
    try:
        tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    single = ((tokenizer.get("post_processor") or {}).get("single") or []) if isinstance(tokenizer, dict) else []
    return bool(single) and "SpecialToken" in single[0]


def _longrope_switch(manifest: Mapping[str, Any]) -> int | None:
    switch = manifest.get("longrope_switch")
    return switch if isinstance(switch, int) and not isinstance(switch, bool) and switch > 0 else None


def kv_bytes_per_token(genai: Mapping[str, Any], manifest: Mapping[str, Any], precision: str) -> int | None:
    """Bytes of KV cache one token takes: layers x 2 (K, V) x KV heads x head size x the graph's I/O width.

    The graphs' I/O (and so the cache) is fp16 for fp16 and for GPU builds, fp32 for cpu builds
    (builder 0.18.0: int4/int8 cpu graphs keep fp32 activations) and for fp32.
    """
    decoder = genai.get("model", {}).get("decoder", {}) if isinstance(genai.get("model"), dict) else {}
    layers, kv_heads, head_size = (decoder.get(k) for k in ("num_hidden_layers", "num_key_value_heads", "head_size"))
    if not (isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_size, int)):
        return None
    wide = precision == "fp32" or (manifest.get("execution_provider") == "cpu" and precision != "fp16")
    return layers * 2 * kv_heads * head_size * (4 if wide else 2)


def available_memory() -> int | None:
    """Bytes of RAM the OS says can be allocated now (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _context(
    requested: Any, model_context: int, per_token: int | None, memory: int | None, on_cpu: bool
) -> tuple[int, str]:
    """The context phi3 enforces (tokens) and how it was chosen.

    onnxruntime-genai allocates the KV cache for ``search.max_length`` tokens when a generation
    starts (GroupQueryAttention graphs share one past/present buffer); phi3 sets that to prompt +
    max_new_tokens, capped at this context. So the context is what one generation may allocate: by
    default the model's whole context where the KV cache for it fits in the available memory (CPU
    provider only: GPU memory is not measured), else the largest multiple of 1024 tokens that fits.
    """
    # the type and lower bound are checked by phi3 (phi3_dml.options.OPTIONS); the model's length here
    if model_context and requested is not None and requested > model_context:
        raise ConfigError(
            f"context_length={requested} is longer than this model's context ({model_context} tokens)",
            hint=f"use context_length <= {model_context}",
        )
    wanted = requested if requested is not None else model_context
    if not wanted or per_token is None or memory is None or not on_cpu:
        return wanted, "requested" if requested is not None else "the model's"
    need = wanted * per_token
    if need <= memory:
        return wanted, "requested" if requested is not None else "the model's"
    fits = (memory // per_token) // 1024 * 1024
    if requested is not None or fits < 1024:
        raise ConfigError(
            f"a {wanted}-token context needs {need / GIB:.1f} GiB for its KV cache "
            f"({per_token} bytes per token), but only {memory / GIB:.1f} GiB of memory is available",
            hint=f"load with context_length={max(fits, 1024)} or less, or free memory",
        )
    return fits, (
        f"capped from {model_context}: its KV cache needs {need / GIB:.1f} GiB, {memory / GIB:.1f} GiB available; "
        "raise it with context_length="
    )


def _provider_options(options: Mapping[str, Any]) -> dict[str, str]:
    """provider_options as the runtime takes them (text); phi3 checked them."""
    provider_options = options.get("provider_options") or {}
    return {k: str(v) for k, v in provider_options.items()}


def intra_op_threads(options: Mapping[str, Any], device: providers.Device) -> tuple[int | None, str]:
    """The intra-op thread count the session gets, and where it came from (for ``details``).

    The user's ``intra_op_num_threads``; else, on the CPU provider, the physical cores this process
    may use (:func:`phi3_dml.options.physical_cores`: ONNX Runtime's own default ran one thread on
    a 2-core VM); else (a GPU provider, or a system whose topology is unknown) ONNX Runtime's own.
    """
    threads = options.get("intra_op_num_threads")
    if threads is not None:
        return int(threads), "intra_op_num_threads"
    cores = physical_cores() if device.provider == "cpu" else None
    if cores is not None:
        return cores, "the physical cores this process may use"
    return None, "ONNX Runtime's default"


def _open(
    og: ModuleType,
    folder: Path,
    device: providers.Device,
    options: Mapping[str, Any],
    graph: str | None,
    threads: int | None,
) -> Any:
    """``og.Model`` on ``device`` with ``threads`` intra-op threads (None: ONNX Runtime's default);
    ``graph``: the decoder file to load instead of genai_config's."""
    provider_options = _provider_options(options)
    try:
        config = og.Config(str(folder))
        providers.configure(config, device, provider_options)
        decoder: dict[str, Any] = {}
        if threads is not None:
            decoder["session_options"] = {"intra_op_num_threads": threads}
        if graph is not None:
            decoder["filename"] = graph
        if decoder:
            config.overlay(json.dumps({"model": {"decoder": decoder}}))
        return og.Model(config)
    except ConfigError:
        raise
    except RuntimeError as exc:
        raise _translate(exc, folder, device) from exc


def load(request: LoadRequest) -> DmlEngine:
    """Open the artifact on the requested device (with its LoRA adapters); report the provider really used."""
    device = providers.parse_device(request.device)
    artifact = request.artifact
    folder, key, manifest = artifact.path, artifact.key, artifact.manifest
    genai = _read_json(folder / "genai_config.json", key)
    _check_files(folder, genai, manifest, key)
    tokenizer_config = _read_json(folder / "tokenizer_config.json", key)
    providers.check_artifact_target(device, manifest.get("execution_provider"), artifact.precision)
    graph = adapters.graph_for(artifact, request.adapters)
    genai_model: dict[str, Any] = genai["model"] if isinstance(genai.get("model"), dict) else {}
    model_context = int(genai_model.get("context_length") or manifest.get("context_length") or 0)
    context, context_source = _context(
        request.options.get("context_length"),
        model_context,
        kv_bytes_per_token(genai, manifest, artifact.precision),
        available_memory(),
        device.provider == "cpu",
    )
    og = import_runtime()
    compat.check_runtime(manifest, og.__version__, key)
    providers.check_available(device, og)
    threads, threads_source = intra_op_threads(request.options, device)
    model = _open(og, folder, device, request.options, graph, threads)
    try:
        tokenizer = og.Tokenizer(model)
    except RuntimeError as exc:
        raise _translate(exc, folder, device) from exc
    eos = genai_model.get("eos_token_id")
    bos = genai_model.get("bos_token_id")
    return DmlEngine(
        og=og,
        model=model,
        tokenizer=tokenizer,
        context_length=context or None,
        eos_ids=frozenset(int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None),
        bos_id=int(bos) if isinstance(bos, int) else None,
        add_bos=_adds_bos(folder, tokenizer_config),
        chat_template=_chat_template(folder, tokenizer_config),
        runtime_version=og.__version__,
        longrope_switch=_longrope_switch(manifest),
        detokenizer=_detokenizer(folder),
        adapters=adapters.load_all(og, model, request.adapters),
        device=device.name,
        # the backend declares every kind; a runtime without working guidance enforces none
        structured_output=guidance.enforced(og, model),
        details={
            "provider": str(model.device_type),
            "runtime": f"onnxruntime-genai {og.__version__}",
            "built_for": manifest.get("execution_provider"),
            "context": f"{context} tokens ({context_source})",
            "intra_op_threads": f"{threads or 'default'} ({threads_source})",
            **({"adapters": ", ".join(request.adapters)} if request.adapters else {}),
        },
    )


__all__ = ["DmlEngine", "import_runtime", "load"]
