"""The measuring child (``python -m phi3.bench SPEC.json OUT.json``): load and generate through the public API."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from phi3.bench.child import peak_rss_bytes
from phi3.bench.prompt import build_prompt
from phi3.errors import Phi3Error

WARMUP_PROMPT = "Hi"
"""The first request in every measuring process (see ``first_call_s``)."""

# -- the measuring child ----------------------------------------------------------------------


@contextlib.contextmanager
def _compiled_dir_redirected(folder: str | None) -> Iterator[None]:
    """Make :func:`phi3.load` hand backends ``folder/<backend>`` as their compiled-blob cache.

    Only ever done inside a measuring child process, so the user's own compiled cache is neither
    read nor written by a benchmark.
    """
    if folder is None:
        yield
        return
    from phi3.cache import ArtifactCache

    root = Path(folder)

    def compiled_dir(self: ArtifactCache, backend: str) -> Path:
        path = root / backend
        path.mkdir(parents=True, exist_ok=True)
        return path

    original = ArtifactCache.compiled_dir
    ArtifactCache.compiled_dir = compiled_dir  # type: ignore[method-assign]
    try:
        yield
    finally:
        ArtifactCache.compiled_dir = original  # type: ignore[method-assign]


def _prepare(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Build or find the artifact; build the prompt from the checkpoint's tokenizer."""
    import phi3
    from phi3.cache import ArtifactCache, is_artifact, read_artifact
    from phi3.plugins import get_registry
    from phi3.sources import resolve_model

    model_path = Path(str(spec["model"])).expanduser()
    started = time.perf_counter()
    if model_path.is_dir() and is_artifact(model_path):
        artifact = read_artifact(model_path.resolve(), from_cache=True)
        tokenizer_dir = artifact.path
    else:
        artifact = phi3.quantize(
            spec["model"],
            backend=spec["backend"],
            precision=spec["precision"],
            engine=spec["engine"],
            revision=spec["revision"],
            **dict(spec.get("options") or {}),
        )
        tokenizer_dir = resolve_model(spec["model"], ArtifactCache().root, spec["revision"]).path
        if not (tokenizer_dir / "tokenizer.json").is_file() and (artifact.path / "tokenizer.json").is_file():
            tokenizer_dir = artifact.path
    quantize_s = time.perf_counter() - started
    info = get_registry().entry(spec["backend"]).info
    size = sum(p.stat().st_size for p in artifact.path.rglob("*") if p.is_file())
    return {
        "artifact": {
            "path": str(artifact.path),
            "key": artifact.key,
            "format": artifact.artifact_format,
            "size_bytes": size,
            "built_now": not artifact.from_cache,
            "quantize_s": None if artifact.from_cache else quantize_s,
        },
        "precision": artifact.precision,
        "library_versions": dict(info.library_versions) if info else {},
        "prompt": build_prompt(tokenizer_dir, int(spec["prompt_tokens"])),
    }


def _measure(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Load in this fresh process (timed) and, for warm runs, generate (timed by phi3)."""
    import phi3

    with _compiled_dir_redirected(spec.get("compiled_dir")):
        started = time.perf_counter()
        model = phi3.load(
            spec["model"],
            backend=spec["backend"],
            device=spec["device"],
            precision=spec["precision"],
            engine=spec["engine"],
            revision=spec["revision"],
            **dict(spec.get("options") or {}),
        )
        load_s = time.perf_counter() - started
    out: dict[str, Any] = {"load_s": load_s, "device": model.device, "precision": model.precision}
    try:
        if spec["mode"] == "warm":
            # A first, tiny request pays the one-time costs of a process's first generation (lazy
            # imports, thread pools, allocations); it gets its own number. Its prompt shares no
            # prefix with the measured one, so no engine can reuse its KV cache.
            first = model.generate(WARMUP_PROMPT, max_new_tokens=2, ignore_eos=True)
            out["first_call_s"] = first.total_s
            stream = model.stream(spec["prompt"], max_new_tokens=int(spec["new_tokens"]), ignore_eos=True)
            for _ in stream:
                pass
            result = stream.result
            out.update(
                ttft_s=result.time_to_first_token_s,
                decode_tokens_per_s=result.decode_tokens_per_s,
                e2e_tokens_per_s=result.new_tokens / result.total_s if result.total_s > 0 else 0.0,
                total_s=result.total_s,
                new_tokens=result.new_tokens,
                prompt_tokens=result.prompt_tokens,
                token_ids=list(result.token_ids),
                finish_reason=result.finish_reason,
                context_length=model.session.context_length,
            )
    finally:
        model.close()
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def worker_main(argv: Sequence[str] | None = None) -> int:
    """``python -m phi3.bench SPEC.json OUT.json``: one measurement, in this (fresh) process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m phi3.bench SPEC.json OUT.json (used by phi3 bench)", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    try:
        out = _prepare(spec) if spec["mode"] == "prepare" else _measure(spec)
    except Phi3Error as exc:
        print(f"Error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    Path(args[1]).write_text(json.dumps(out), encoding="utf-8")
    return 0
