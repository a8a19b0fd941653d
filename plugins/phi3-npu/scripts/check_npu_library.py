#!/usr/bin/env python3
"""Smoke-check an installed intel-npu-acceleration-library on a tiny random Phi-3.

Usage (with the environment that build_npu_library.py installed into)::

    python plugins/phi3-npu/scripts/check_npu_library.py [--reproduce-bugs] [--keep DIR]

It builds a tiny random Phi-3 (``torch.manual_seed(0)``, vocab 512, hidden 64, 2 layers) in a
temporary directory, then in this one process loads it with
``NPUModelForCausalLM.from_pretrained(dir, use_cache=True, config=CompilerConfig(dtype=...),
attn_implementation="sdpa", export=False)`` as int4, int8 and float16, generates 8 greedy tokens
with each, and checks float16 and int8 match the fp32 transformers model token for token (int4
only has to produce tokens).  It exits non-zero if anything fails or if anything was written into
the current working directory.

It also shows how to keep the library's files out of the working directory (``npu_state_dir``):

* ``./nc_workspace/<date>/`` (neural-compressor's tuning history, written by every int4/int8
  quantization): ``neural_compressor.set_workspace(path)`` (= ``neural_compressor.config.options
  .workspace``), set before quantizing.
* ``./cache/models/<mangled name>/pytorch_npu_model.pt`` (the library's pickled compiled model,
  written by ``from_pretrained`` unless ``export=False``): path from
  ``intel_npu_acceleration_library.modelling.get_cache_dir()``, hard-coded ``"cache/models"``
  relative to the cwd; replace that module function to move it.
* ``./cache/<n>.blob`` (OpenVINO's compiled-kernel cache: the C++ code calls
  ``core.set_property(ov::cache_dir("cache"))`` before every kernel compile, and kernels are
  compiled lazily, one per new input shape, during forward/generate): no setting reaches it, only
  the process's cwd at the time of each forward call.

And the workarounds for the library's bugs (``--reproduce-bugs`` runs each in a subprocess):

* a quantized model used after another quantized model has been loaded in the same process
  aborts it (``terminate called without an active exception``, exit 134): call
  ``intel_npu_acceleration_library.backend.clear_cache()`` before loading a model and before
  switching back to a different model (the kernel cache is keyed by shape, not by model/dtype).
* a second identical ``from_pretrained`` (``export=True``, the default) reloads
  ``cache/models/.../pytorch_npu_model.pt`` with ``torch.load``, which torch >= 2.6 refuses
  (``_pickle.UnpicklingError: Weights only load failed``).  ``export=False`` avoids writing it,
  but does not skip reading an existing one, so also point ``get_cache_dir`` at an empty,
  private directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

PROMPT = [[1, 17, 42, 99, 7, 300]]
NEW_TOKENS = 8


def log(msg: str) -> None:
    print(f"[check_npu_library] {msg}", flush=True)


def make_tiny_phi3(path: Path) -> list[int]:
    """Save a tiny random Phi-3 to path; return its fp32 greedy continuation of PROMPT."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    cfg = Phi3Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = Phi3ForCausalLM(cfg).eval()
    model.save_pretrained(path)
    with torch.no_grad():
        out = model.generate(torch.tensor(PROMPT), max_new_tokens=NEW_TOKENS, do_sample=False)
    return [int(t) for t in out[0]]


@contextlib.contextmanager
def npu_state_dir(state: Path) -> Iterator[None]:
    """Run the enclosed NPU-library calls with all their files under ``state``.

    Redirects neural-compressor's workspace and the library's model export dir (both process-wide
    settings, left in place), and chdirs to ``state`` for the OpenVINO kernel cache (``./cache``),
    restoring the cwd afterwards.  The chdir is process-wide: do not run other cwd-relative work
    concurrently.
    """
    import intel_npu_acceleration_library.modelling as npu_modelling
    import neural_compressor

    state.mkdir(parents=True, exist_ok=True)
    neural_compressor.set_workspace(str(state / "nc_workspace") + os.sep)
    models_dir = str(state / "models")
    npu_modelling.get_cache_dir = lambda: models_dir  # type: ignore[assignment,unused-ignore]
    old = os.getcwd()
    os.chdir(state)
    try:
        yield
    finally:
        os.chdir(old)


def run_checks(model_dir: Path, state: Path, fp32_tokens: list[int]) -> list[str]:
    """Load int4, int8, fp16 in one process and generate; return a list of failures."""
    import torch
    from intel_npu_acceleration_library import NPUModelForCausalLM, backend, float16, int4, int8
    from intel_npu_acceleration_library.compiler import CompilerConfig

    failures: list[str] = []
    log(f"npu_available() = {backend.npu_available()}")
    models = {}
    results: dict[str, list[int]] = {}
    with npu_state_dir(state):
        for name, dtype in (("int4", int4), ("int8", int8), ("float16", float16)):
            backend.clear_cache()  # before every load: see the module docstring
            model = NPUModelForCausalLM.from_pretrained(
                str(model_dir),
                use_cache=True,
                config=CompilerConfig(dtype=dtype),
                attn_implementation="sdpa",
                export=False,
            ).eval()
            with torch.no_grad():
                out = model.generate(torch.tensor(PROMPT), max_new_tokens=NEW_TOKENS, do_sample=False)
            tokens = [int(t) for t in out[0]]
            same = tokens == fp32_tokens
            log(f"{name:8s} {tokens} {'== fp32' if same else '!= fp32'}")
            if len(tokens) != len(PROMPT[0]) + NEW_TOKENS and tokens[-1] != 2:
                failures.append(f"{name}: unexpected output length {tokens}")
            if name in ("int8", "float16") and not same:
                failures.append(f"{name}: greedy tokens differ from fp32 {fp32_tokens}")
            models[name] = model
            results[name] = tokens
        # Switching back to an earlier quantized model needs clear_cache() too.
        backend.clear_cache()
        with torch.no_grad():
            out = models["int4"].generate(torch.tensor(PROMPT), max_new_tokens=NEW_TOKENS, do_sample=False)
        again = [int(t) for t in out[0]]
        log(f"int4 again after clear_cache() {again}")
        if again != results["int4"]:
            failures.append("int4 after switching back differs from its first run")
    return failures


BUG_SCRIPTS = {
    "int4 then int8 without clear_cache()": """
        import warnings; warnings.simplefilter("ignore")
        import torch
        from intel_npu_acceleration_library import NPUModelForCausalLM, int4, int8
        from intel_npu_acceleration_library.compiler import CompilerConfig
        for dt in (int4, int8):
            m = NPUModelForCausalLM.from_pretrained({model!r}, use_cache=True, config=CompilerConfig(dtype=dt),
                                                    attn_implementation="sdpa", export=False)
            m.generate(torch.tensor({prompt!r}), max_new_tokens=4, do_sample=False)
        """,
    "second identical from_pretrained (export=True)": """
        import warnings; warnings.simplefilter("ignore")
        from intel_npu_acceleration_library import NPUModelForCausalLM, int8
        from intel_npu_acceleration_library.compiler import CompilerConfig
        for _ in range(2):
            NPUModelForCausalLM.from_pretrained({model!r}, use_cache=True, config=CompilerConfig(dtype=int8),
                                                attn_implementation="sdpa")
        """,
}


def reproduce_bugs(model_dir: Path, scratch: Path) -> None:
    """Run each known bug in a subprocess (cwd = a scratch dir) and report how it ends."""
    for i, (title, body) in enumerate(BUG_SCRIPTS.items()):
        cwd = scratch / f"bug{i}"
        cwd.mkdir(parents=True)
        code = textwrap.dedent(body).format(model=str(model_dir), prompt=PROMPT)
        proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, capture_output=True, text=True)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "rror" in ln or "terminate" in ln]
        log(f"bug '{title}': exit {proc.returncode}; {lines[-1][:200] if lines else 'no error line'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reproduce-bugs", action="store_true", help="also reproduce the two known bugs")
    p.add_argument("--keep", metavar="DIR", help="work in DIR (kept) instead of a temporary directory")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")

    cwd = Path.cwd()
    before = sorted(os.listdir(cwd))
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="npu-lib-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = work / "tiny-phi3"
        fp32 = make_tiny_phi3(model_dir)
        log(f"fp32     {fp32}")
        failures = run_checks(model_dir, work / "npu-state", fp32)
        if args.reproduce_bugs:
            reproduce_bugs(model_dir, work / "bugs")
        written = sorted(set(os.listdir(cwd)) - set(before))
        if written:
            failures.append(f"wrote into the working directory: {written}")
        state_files = sorted(str(q.relative_to(work)) for q in (work / "npu-state").rglob("*") if q.is_dir())
        log(f"state dirs: {state_files}")
        for f in failures:
            log(f"FAIL: {f}")
        log("OK" if not failures else f"{len(failures)} failure(s)")
        return 1 if failures else 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
