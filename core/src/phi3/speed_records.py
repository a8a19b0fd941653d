"""Decode speeds ``phi3 bench`` measured on this machine, kept so that ``backend="auto"`` can use them.

Why: within one device class (two CPU backends, say) the fastest backend depends on the machine
(its ISA, cores, memory) and on the model size, which no fixed order can know. ``phi3 bench``
measures it; this module remembers the result per (backend, engine, device class, precision,
model size bucket), and :mod:`phi3.selection` prefers the fastest measured backend within the
best device class. Without a measurement the documented default order decides.

The file is ``$PHI3_HOME/measurements/decode-speed.json``: small, versioned
(``{"version": 1, "records": [...]}``), written atomically (a temp file in the same folder, then
``os.replace``) under a :mod:`filelock` lock, so concurrent ``phi3 bench`` runs never interleave.
Reading never takes the lock and never fails: a missing file means "nothing measured", and a
corrupt one, or one from another version, is ignored with a warning (the next ``phi3 bench``
rewrites it), because a speed hint must never stop a model from loading.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import filelock

from phi3 import catalogue

SCHEMA_VERSION = 1
FOLDER = "measurements"
FILENAME = "decode-speed.json"

SIZE_BUCKETS: tuple[tuple[float, str], ...] = (
    (1e9, "under-1B"),
    (5e9, "1B-5B"),
    (20e9, "5B-20B"),
    (math.inf, "over-20B"),
)
"""Upper bound (exclusive) in parameters -> bucket name. Phi-3/3.5/4-mini (3.8B) are ``1B-5B``,
Phi-3-medium (14B) ``5B-20B``, the tiny test and benchmark models ``under-1B``. Speeds carry over
within a bucket (the same kernels dominate), not across buckets."""

SMOKE_PARAMETERS = 1e6
"""The built-in ``smoke`` model is a few hundred thousand parameters: ``under-1B``."""


class SpeedRecordWarning(UserWarning):
    """The measurements file could not be used (corrupt, other version); it is ignored."""


@dataclass(frozen=True)
class SpeedRecord:
    """One measured decode rate: the median of a ``phi3 bench`` target."""

    backend: str
    engine: str
    device: str
    device_kind: str
    precision: str
    size_bucket: str
    decode_tokens_per_s: float
    measured_at: str
    """ISO 8601 UTC time of the measurement."""
    model: str
    """What was benchmarked (as typed), for the user's information only."""

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.backend, self.engine, self.device_kind, self.precision, self.size_bucket)

    @property
    def date(self) -> str:
        return self.measured_at[:10]


# -- model size -------------------------------------------------------------------------------


def parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of a Phi-3 ``config.json`` (matrices only; norms are a rounding error).

    Per layer: q/k/v/o projections (k and v with the KV heads) and the gated MLP (3 matrices); plus
    the embedding, and the LM head unless it is tied to the embedding.
    """
    hidden = int(config["hidden_size"])
    inter = int(config.get("intermediate_size") or 4 * hidden)
    layers = int(config["num_hidden_layers"])
    vocab = int(config["vocab_size"])
    heads = int(config.get("num_attention_heads") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * inter
    embedding = vocab * hidden
    head = 0 if config.get("tie_word_embeddings") else vocab * hidden
    return layers * (attention + mlp) + embedding + head


def size_bucket(parameters: float) -> str:
    """The bucket name of a model with ``parameters`` parameters (see :data:`SIZE_BUCKETS`)."""
    for bound, name in SIZE_BUCKETS:
        if parameters < bound:
            return name
    return SIZE_BUCKETS[-1][1]


def _config_bucket(path: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return size_bucket(parameter_count(json.loads(path.read_text(encoding="utf-8"))))
    return None


def _hub_config(repo_id: str, revision: str | None) -> Path | None:
    """``config.json`` of a hub model if it is in the local Hugging Face cache (never downloads)."""
    with contextlib.suppress(Exception):  # huggingface_hub raises its own types for odd ids
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        if isinstance(found, str):
            return Path(found)
    return None


def model_size_bucket(model: str | os.PathLike[str], revision: str | None = None) -> str | None:
    """The size bucket of what the user typed, found cheaply (no download, no weights read).

    A folder (checkpoint or artifact) -> its ``config.json``; ``smoke`` -> ``under-1B``; a catalogue
    alias -> its cached ``config.json``, else the catalogue's parameter count; a hub id -> its cached
    ``config.json``. None when it cannot be told (then auto uses the default order).
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return _config_bucket(path / "config.json")
    if text.lower() == catalogue.SMOKE_ALIAS:
        return size_bucket(SMOKE_PARAMETERS)
    entry = catalogue.lookup(text)
    repo_id = entry.repo_id if entry is not None else text
    if "/" in repo_id:
        config = _hub_config(repo_id, revision)
        if config is not None:
            bucket = _config_bucket(config)
            if bucket is not None:
                return bucket
    if entry is not None and entry.parameters:
        return size_bucket(entry.parameters)
    return None


# -- the file ---------------------------------------------------------------------------------


def records_path(home: Path | None = None) -> Path:
    """Where the measurements live: ``<PHI3_HOME>/measurements/decode-speed.json``."""
    if home is None:
        from phi3.cache import phi3_home

        home = phi3_home()
    return home / FOLDER / FILENAME


def _parse(data: Any) -> list[SpeedRecord]:
    if not isinstance(data, dict) or data.get("version") != SCHEMA_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise ValueError(f"version {version!r}, this phi3 reads version {SCHEMA_VERSION}")
    records = data.get("records")
    if not isinstance(records, list):
        raise ValueError("no records list")
    out = []
    for item in records:
        record = SpeedRecord(**item)
        if not isinstance(record.decode_tokens_per_s, (int, float)) or record.decode_tokens_per_s <= 0:
            raise ValueError(f"bad decode rate in {item!r}")
        out.append(record)
    return out


def load_records(path: Path | None = None) -> list[SpeedRecord]:
    """Every saved record; ``[]`` (with a :class:`SpeedRecordWarning`) if the file is unusable."""
    path = path or records_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        warnings.warn(f"phi3: ignoring {path}: {exc}", SpeedRecordWarning, stacklevel=2)
        return []
    try:
        return _parse(json.loads(text))
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError; TypeError: wrong fields
        warnings.warn(
            f"phi3: ignoring the measurements in {path} ({exc}); `phi3 bench` rewrites it",
            SpeedRecordWarning,
            stacklevel=2,
        )
        return []


def save_records(new: Iterable[SpeedRecord], path: Path | None = None) -> Path:
    """Merge ``new`` into the file (a newer record replaces the one with the same key), atomically."""
    path = path or records_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(path) + ".lock"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SpeedRecordWarning)  # a corrupt file is simply replaced
            merged = {r.key(): r for r in load_records(path)}
        for record in new:
            merged[record.key()] = record
        payload = {"version": SCHEMA_VERSION, "records": [asdict(r) for r in merged.values()]}
        handle, temp = tempfile.mkstemp(prefix=f".{FILENAME}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(payload, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    return path


# -- what selection asks ----------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredSpeeds:
    """The records that apply to one model (its size bucket), as :mod:`phi3.selection` consults them."""

    size_bucket: str | None
    records: Sequence[SpeedRecord]

    def decode_rate(self, backend: str, engine: str, device_kind: str, precision: str) -> SpeedRecord | None:
        """The record for this backend's engine on this device class, precision and model size, if any."""
        if self.size_bucket is None:
            return None
        wanted = (backend, engine, device_kind, precision, self.size_bucket)
        return next((r for r in self.records if r.key() == wanted), None)

    @classmethod
    def for_model(cls, model: str | os.PathLike[str], revision: str | None = None) -> MeasuredSpeeds:
        bucket = model_size_bucket(model, revision)
        return cls(bucket, load_records() if bucket is not None else [])


__all__ = [
    "SCHEMA_VERSION",
    "SIZE_BUCKETS",
    "MeasuredSpeeds",
    "SpeedRecord",
    "SpeedRecordWarning",
    "load_records",
    "model_size_bucket",
    "parameter_count",
    "records_path",
    "save_records",
    "size_bucket",
]
