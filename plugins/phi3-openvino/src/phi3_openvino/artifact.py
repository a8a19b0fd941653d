"""What an OpenVINO artifact folder holds, and turning a failed load into a useful phi3 error.

Both engines read the same folder (the layout ``optimum-cli export openvino`` writes), so it has
one artifact format and one cache entry::

    openvino_model.xml/.bin              the stateful LLM (KV cache inside), weights compressed
    openvino_tokenizer.xml/.bin          tokenizer as an OpenVINO model (openvino_tokenizers)
    openvino_detokenizer.xml/.bin        detokenizer, likewise: the genai engine needs no torch
    config.json, generation_config.json  Hugging Face configs (EOS ids, context length)
    tokenizer.json, tokenizer_config.json, chat_template.jinja ...   for the optimum engine

phi3 already checks each file's size against the manifest (truncation). What it cannot see is a
file with the right size and wrong bytes; OpenVINO then fails with a C++ traceback.
:func:`explain_load_failure` re-reads the IR files to tell "this artifact is damaged" (ArtifactError,
with the command that fixes it) from "this device cannot compile it" (a one-line BackendError).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from phi3.errors import ArtifactError, BackendError, ConfigError, Phi3Error
from phi3.types import Artifact

ARTIFACT_FORMAT = "openvino-ir"
MODEL_XML = "openvino_model.xml"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
IR_FILES = (MODEL_XML, TOKENIZER_XML, DETOKENIZER_XML)
REQUIRED_FILES = (*IR_FILES, *(name.replace(".xml", ".bin") for name in IR_FILES), "config.json")


def _fix_hint(artifact: Artifact) -> str:
    return f"delete it (phi3 cache rm {artifact.path.name}) and run again to rebuild"


def check_files(artifact: Artifact) -> None:
    """Raise ArtifactError if a file either engine needs is missing."""
    missing = [name for name in REQUIRED_FILES if not (artifact.path / name).is_file()]
    if missing:
        raise ArtifactError(
            f"OpenVINO artifact {artifact.path} is missing {', '.join(missing)}", hint=_fix_hint(artifact)
        )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON config of the artifact; a damaged one is an ArtifactError, a missing one ``{}``."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"artifact file {path} is unreadable: {exc}",
            hint=f"delete {path.parent} (phi3 cache rm {path.parent.name}) and rebuild",
        ) from None
    return data if isinstance(data, dict) else {}


def context_length(artifact: Artifact) -> int | None:
    """The manifest's context length, else ``max_position_embeddings`` of config.json."""
    if artifact.context_length:
        return artifact.context_length
    value = read_json(artifact.path / "config.json").get("max_position_embeddings")
    return int(value) if value else None


def _one_line(exc: BaseException) -> str:
    """OpenVINO's messages are multi-line C++ traces; keep the lines that say something."""
    lines = [line.strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Exception from", "Check '"))]
    return " ".join(useful or lines)[:400] or type(exc).__name__


_PROPERTY_ERROR = re.compile(
    r"(Unsupported property (?P<unknown>\S+)|Wrong value\s*(?P<value>\S*?)\s*for property key (?P<key>\w+))"
)


def property_error(exc: BaseException, device: str) -> ConfigError | None:
    """An ``ov_config`` entry the device plugin refused, as the user's option error (or None).

    OpenVINO words these as ``Unsupported property X by CPU plugin`` and ``Wrong value V for
    property key X. Supported values: ...`` (checked with openvino 2026.4.1).
    """
    text = " ".join(str(exc).split())
    match = _PROPERTY_ERROR.search(text)
    if match is None:
        return None
    if match.group("unknown"):
        name = match.group("unknown").rstrip(".,")
        return ConfigError(
            f"OpenVINO's {device} plugin has no property {name!r} (from -O ov_config)",
            hint="remove it from ov_config, or check its spelling against the OpenVINO device documentation",
        )
    detail = text[match.start() :].split("Exception from")[0].strip()
    return ConfigError(
        f"ov_config property {match.group('key')} has a value OpenVINO's {device} plugin refuses: {detail}",
        hint="fix that value in -O ov_config",
    )


def explain_load_failure(artifact: Artifact, device: str, exc: BaseException) -> Phi3Error:
    """Classify a failed pipeline/model construction: bad option, damaged artifact, or device trouble.

    The files are re-read with the openvino_tokenizers extension loaded: without it a healthy
    tokenizer IR fails to read ("unsupported opset: extension"), which once made a bad ov_config
    entry look like a corrupt tokenizer.
    """
    if isinstance(exc, Phi3Error):
        return exc
    refused = property_error(exc, device)
    if refused is not None:
        return refused
    from phi3_openvino.devices import ov_core

    core = ov_core()
    try:
        import openvino_tokenizers

        core.add_extension(openvino_tokenizers._ext_path)
    except Exception:  # no tokenizers extension: the tokenizer files cannot be judged, so skip them
        names: tuple[str, ...] = (MODEL_XML,)
    else:
        names = IR_FILES
    for name in names:
        try:
            core.read_model(str(artifact.path / name))
        except Exception as read_exc:
            return ArtifactError(
                f"OpenVINO artifact file {artifact.path / name} is corrupt: {_one_line(read_exc)}",
                hint=_fix_hint(artifact),
            )
    return BackendError(
        f"OpenVINO could not compile the model for {device}: {_one_line(exc)}",
        hint="check the device's driver, or try --device CPU; run with --debug for the trace",
    )


__all__ = [
    "ARTIFACT_FORMAT",
    "REQUIRED_FILES",
    "check_files",
    "context_length",
    "explain_load_failure",
    "property_error",
    "read_json",
]
