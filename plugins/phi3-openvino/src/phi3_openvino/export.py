"""``phi3_quantize``: Phi-3 checkpoint -> OpenVINO IR (int4/int8/fp16) + OpenVINO tokenizer models.

Through optimum-intel's Python API (what ``optimum-cli export openvino`` runs), not a subprocess:

1. ``optimum.exporters.openvino.main_export`` traces the transformers model into a stateful IR
   (task ``text-generation-with-past``: the KV cache lives inside the model). fp16 is exported in
   fp16 directly; int4/int8 are exported in the checkpoint's own dtype into a scratch folder.
2. int4/int8: ``OVModelForCausalLM.from_pretrained(scratch, quantization_config=
   OVWeightQuantizationConfig(...))`` compresses the weights with NNCF and ``save_pretrained``
   writes the result. (``main_export`` alone never compresses when given a config; optimum-cli
   uses a private helper for that step.)
   fp16 only: the rotary embedding's tables (inverse frequencies, LongRoPE factors) are put back
   into f32 with the checkpoint's exact values (:mod:`phi3_openvino.rope_tables`; optimum-intel
   compresses the whole IR to fp16, and positions then drift).
3. ``openvino_tokenizers.convert_tokenizer`` turns the Hugging Face tokenizer into tokenizer and
   detokenizer models, so the genai engine needs neither torch nor transformers at run time.

Everything is written under ``output_dir`` (phi3's temp build folder; phi3 writes the manifest
and renames it into the cache atomically). NNCF and optimum print tables and progress bars to
stdout; they are sent to stderr so that ``phi3 quantize --json`` output stays parseable.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from phi3.errors import BackendError, BackendUnavailableError, Phi3Error
from phi3.probing import module_available
from phi3.types import Progress, QuantizeRequest
from phi3.vendor_compat import hide_broken_torchvision
from phi3_openvino.artifact import DETOKENIZER_XML, MODEL_XML, REQUIRED_FILES, TOKENIZER_XML
from phi3_openvino.options import ModelShape, QuantSettings, resolve_quantization
from phi3_openvino.rope_tables import read_config, restore_rope_tables

TASK = "text-generation-with-past"
EXPORT_MODULES = ("optimum", "nncf", "transformers", "torch", "openvino", "openvino_tokenizers")
SCRATCH = ".phi3-export"


def _require_export_stack() -> None:
    missing = [m for m in EXPORT_MODULES if not module_available(m)]
    if missing:
        raise BackendUnavailableError(
            f"quantizing for OpenVINO needs {', '.join(missing)}, which are not installed",
            hint="pip install --force-reinstall phi3-openvino (it depends on optimum-intel, nncf and transformers)",
        )


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 (Python, rich, tqdm and C++ output alike) to stderr for a while."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no usable stdout/stderr descriptors: nothing to protect
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence torch.jit's TracerWarnings: expected during any export, and about optimum's code."""
    with warnings.catch_warnings():
        for message in (
            ".*might cause the trace to be incorrect",
            "torch.tensor results are registered as constants",
            ".*torch.jit.trace.* is deprecated",
        ):
            warnings.filterwarnings("ignore", message=message)
        yield


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


def _export_ir(source: Path, out: Path, dtype: str, trust_remote_code: bool) -> None:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    main_export(
        str(source),
        output=out,
        task=TASK,
        ov_config=OVConfig(dtype=dtype),
        convert_tokenizer=False,  # done explicitly below, so a failure is an error, not a log line
        trust_remote_code=trust_remote_code,
        local_files_only=True,
        library_name="transformers",
        stateful=True,
    )


def _compress(scratch: Path, out: Path, settings: QuantSettings) -> None:
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    config = OVWeightQuantizationConfig(
        bits=settings.bits, sym=settings.sym, group_size=settings.group_size, ratio=settings.ratio
    )
    # local_files_only=False: with HF_HUB_OFFLINE set, True makes optimum look the folder up as a hub id
    model = OVModelForCausalLM.from_pretrained(
        str(scratch), quantization_config=config, compile=False, local_files_only=False
    )
    model.save_pretrained(str(out))
    del model
    gc.collect()  # drop the mmap of the scratch weights before they are deleted
    for item in scratch.iterdir():  # configs and tokenizer files main_export wrote
        if not item.name.startswith("openvino_model.") and not (out / item.name).exists():
            shutil.move(str(item), str(out / item.name))


def _convert_tokenizer(source: Path, out: Path, trust_remote_code: bool) -> None:
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(
        str(source), trust_remote_code=trust_remote_code, local_files_only=True
    )
    tokenizer, detokenizer = convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    ov.save_model(tokenizer, str(out / TOKENIZER_XML))
    ov.save_model(detokenizer, str(out / DETOKENIZER_XML))
    if not (out / "tokenizer_config.json").exists():
        hf_tokenizer.save_pretrained(str(out))


def quantize(request: QuantizeRequest, output_dir: Path, progress: Progress) -> Mapping[str, Any]:
    """Build the artifact for ``request`` into ``output_dir``; return the extra manifest fields."""
    source = request.source.path
    shape = ModelShape.from_checkpoint(source)
    settings = resolve_quantization(request.precision, request.options, shape)
    _require_export_stack()
    if settings.note:
        progress(settings.note)
    total = 3 if settings.bits is None else 4
    what = (
        request.precision
        if settings.bits is None
        else (
            f"{request.precision} ({'sym' if settings.sym else 'asym'}"
            + (f", group size {settings.group_size}, ratio {settings.ratio}" if settings.bits == 4 else "")
            + ")"
        )
    )
    hide_broken_torchvision()
    try:
        with stdout_to_stderr(), quiet_tracing():
            progress(f"openvino: exporting {request.source.model_id} to OpenVINO IR", 0, total)
            restored: list[str] = []
            if settings.bits is None:
                _export_ir(source, output_dir, "fp16", request.trust_remote_code)
                restored = restore_rope_tables(output_dir / MODEL_XML, read_config(source))
            else:
                scratch = output_dir / SCRATCH
                _export_ir(source, scratch, "auto", request.trust_remote_code)
                progress(f"openvino: compressing weights to {what} with NNCF", 1, total)
                _compress(scratch, output_dir, settings)
                shutil.rmtree(scratch, ignore_errors=True)
            progress("openvino: converting the tokenizer to OpenVINO models", total - 2, total)
            _convert_tokenizer(source, output_dir, request.trust_remote_code)
            progress("openvino: checking the artifact", total - 1, total)
    except Phi3Error:
        raise
    except Exception as exc:
        raise BackendError(
            f"OpenVINO export of {request.source.model_id} to {what} failed: {_one_line(exc)}",
            hint="run with --debug for the full trace",
        ) from exc
    missing = [name for name in REQUIRED_FILES if not (output_dir / name).is_file()]
    if missing:
        raise BackendError(f"OpenVINO export wrote no {', '.join(missing)}", hint="run with --debug and report it")
    progress(f"openvino: built {request.precision} artifact", total, total)
    return {
        "context_length": shape.context_length,
        "quantization": settings.manifest(),
        "model": {"hidden_size": shape.hidden_size, "intermediate_size": shape.intermediate_size},
        "export": {
            "task": TASK,
            "stateful": True,
            "ir": MODEL_XML,
            "tokenizer": "openvino_tokenizers",
            "rope_tables_f32": restored,
        },
        "engines": ["genai", "optimum"],
    }


__all__ = ["quantize", "stdout_to_stderr"]
