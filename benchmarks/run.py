#!/usr/bin/env python3
"""phi3's benchmark suite: phi3 against the direct library calls, llama.cpp and a roofline.

    python benchmarks/run.py                 # everything, ~20-30 min on a 2-core machine
    python benchmarks/run.py --runs 3 --skip-parity
    python benchmarks/run.py --repeat 3      # the whole interleaved set 3 times: verdicts need every repeat

Writes the raw results to ``benchmarks/RESULTS.json`` (with the run's metadata: commit, command, CPU,
installed and imported versions, load average at the start and the end) and renders
``benchmarks/RESULTS.md`` from that JSON alone (``--render`` re-creates it). Refuses to start above
1-minute load average 0.5 unless ``--noisy`` (the report then says the machine was shared).
See ``benchmarks/README.md`` for what is measured and how; nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import report as report_md  # noqa: E402
import reporting  # noqa: E402
import roofline  # noqa: E402

from phi3 import bench  # noqa: E402
from phi3.bench import BenchChildError, run_child, summarize  # noqa: E402

WORKERS = [sys.executable, str(HERE / "workers.py")]
PHI3_WORKER = bench.worker_command()
MID_SHAPE = {
    "vocab_size": 32064,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 4,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
}
SMALL_SHAPE = {
    "vocab_size": 1056,  # not 2 x intermediate: the kit refuses widths that equal the vocab (ORT GenAI builder)
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
}
"""--shape small: for developing this script in seconds; its numbers mean nothing."""
PARITY_PROMPTS = (
    "The capital of France is",
    "Quantization stores weights with fewer bits, which",
    "Once upon a time, a young girl found a golden key hidden under a stone. She",
)
VENDOR_MODULES = (
    "openvino",
    "openvino_genai",
    "optimum",
    "onnxruntime",
    "onnxruntime_genai",
    "torch",
    "transformers",
    "intel_npu_acceleration_library",
    "llama_cpp",
    "numpy",
)


def log(message: str) -> None:
    elapsed = time.perf_counter() - STARTED
    print(f"[{elapsed / 60:5.1f} min] {message}", file=sys.stderr, flush=True)


STARTED = time.perf_counter()


# -- rows: what is measured -------------------------------------------------------------------


@dataclass
class Row:
    key: str
    label: str
    kind: str  # phi3 | direct | peer | baseline
    group: str  # rows with the same group run the same artifact (phi3 vs direct pairs)
    command: list[str]
    spec: dict[str, Any]
    cold: bool = False
    warm_dir: Path | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    artifact: str | None = None
    weights: roofline.WeightBytes | None = None
    precision: str = ""

    def child_spec(self, mode: str, compiled_dir: Path | None) -> dict[str, Any]:
        spec = dict(self.spec)
        if self.kind == "phi3":
            spec["mode"] = mode
            spec["compiled_dir"] = str(compiled_dir) if compiled_dir else None
        elif "ov_config" in spec and compiled_dir is not None:
            spec["ov_config"] = {**spec["ov_config"], "CACHE_DIR": str(compiled_dir / "openvino")}
        return spec


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- steps ------------------------------------------------------------------------------------


def build_model(workdir: Path, shape: dict[str, int], name: str) -> Path:
    from workers import hide_broken_torchvision

    from phi3.testing.tiny_model import make_tiny_phi3

    hide_broken_torchvision()  # a CUDA torchvision next to a CPU torch breaks transformers' imports

    # Phi-3-mini's per-layer shapes, 4 layers, with a SentencePiece tokenizer.model so that
    # llama.cpp's converter accepts it (mid_size_phi3 has no tokenizer.model).
    return make_tiny_phi3(workdir / "models" / name, sentencepiece_model=True, **shape)


def time_list_backends(env: dict[str, str], repeats: int = 5) -> dict[str, Any]:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "phi3", "list-backends"], capture_output=True, text=True, env=env, check=False
        )
        walls.append(time.perf_counter() - start)
    probe = (
        "import sys, runpy; sys.argv = ['phi3', 'list-backends', '--json']\n"
        "try:\n    runpy.run_module('phi3', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print('IMPORTED=' + ','.join(m for m in {VENDOR_MODULES!r} if m in sys.modules), file=sys.stderr)"
    )
    checked = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    line = next((x for x in checked.stderr.splitlines() if x.startswith("IMPORTED=")), "IMPORTED=?")
    imported = [m for m in line.split("=", 1)[1].split(",") if m]
    try:
        listed = json.loads(checked.stdout)["backends"]
    except (ValueError, KeyError):
        listed = []
    parts = {}
    for name, code in (("python_start_s", "pass"), ("import_phi3_cli_s", "import phi3.cli")):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - start)
        parts[name] = statistics.median(times)
    return {
        "wall_s": summarize([{"w": w} for w in walls], ["w"])["w"],
        "returncode": done.returncode,
        **parts,
        "vendor_modules_imported": imported,
        "output": done.stdout,
        "backends": [{"name": b["name"], "status": b["status"], "detail": b["detail"]} for b in listed],
    }


def first_and_second_run(backend: str, engine: str, model: Path, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """`phi3 generate` twice in new processes: first with nothing cached, then with everything cached."""
    out: dict[str, Any] = {"backend": backend, "engine": engine}
    command = [
        sys.executable,
        "-m",
        "phi3",
        "generate",
        str(model),
        "The capital of France is",
        "--raw",
        "-b",
        backend,
        "-e",
        engine,
        "-n",
        "16",
        "--ignore-eos",
    ]
    for label in ("first", "second"):
        err_path = workdir / f"generate-{backend}-{label}.stderr"
        with err_path.open("w") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            first_byte = proc.stdout.read(1)
            first_at = time.perf_counter() - start
            rest = proc.stdout.read()
            code = proc.wait()
            total = time.perf_counter() - start
        if code != 0 or not first_byte:
            out[label] = {"error": report_md.last_line(err_path.read_text(errors="replace")), "returncode": code}
            return out
        out[label] = {
            "first_output_s": first_at,
            "total_s": total,
            "built_artifact": "new artifact" in err_path.read_text(errors="replace"),
            "text_bytes": len(first_byte + rest),
        }
    out["ratio"] = out["first"]["first_output_s"] / out["second"]["first_output_s"]
    return out


def prepare_phi3(
    model: Path,
    backend: str,
    engine: str,
    precision: str | None,
    prompt_tokens: int,
    env: dict[str, str],
    device: str = "auto",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec = {
        "mode": "prepare",
        "options": options or {},
        "model": str(model),
        "revision": None,
        "backend": backend,
        "engine": engine,
        "device": device,
        "precision": precision,
        "prompt_tokens": prompt_tokens,
        "new_tokens": 2,
    }
    return run_child(PHI3_WORKER, spec, env=env)


def llama_sources(workdir: Path) -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py and gguf-py, from the installed llama-cpp-python's sdist."""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None
    target = workdir / f"llama-cpp-python-{version}"
    if (target / "convert_hf_to_gguf.py").is_file() and (target / "gguf-py").is_dir():
        return target
    downloads = workdir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(downloads),
            f"llama-cpp-python=={version}",
        ],
        check=True,
    )
    sdist = next(downloads.glob(f"llama_cpp_python-{version}.tar.gz"))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            # the converter script, its package(s) and the matching gguf-py
            if (
                len(parts) > 3
                and parts[1:3] == ("vendor", "llama.cpp")
                and (parts[3] in ("gguf-py", "conversion") or (len(parts) == 4 and parts[3].endswith(".py")))
            ):
                member.name = str(Path(*parts[3:]))
                tar.extract(member, target, filter="data")
    return target


def build_gguf(model: Path, workdir: Path, env: dict[str, str]) -> dict[str, Path]:
    sources = llama_sources(workdir)
    if sources is None:
        raise RuntimeError("llama-cpp-python is not installed")
    out = workdir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    f16, q4 = out / f"{model.name}-f16.gguf", out / f"{model.name}-q4_0.gguf"
    stamp = out / "source.json"
    source_id = (model / "phi3-tiny.json").read_text()
    if not (f16.is_file() and q4.is_file() and stamp.is_file() and stamp.read_text() == source_id):
        child_env = {**env, "PYTHONPATH": str(sources / "gguf-py")}
        done = subprocess.run(
            [
                sys.executable,
                str(sources / "convert_hf_to_gguf.py"),
                str(model),
                "--outtype",
                "f16",
                "--outfile",
                str(f16),
            ],
            capture_output=True,
            text=True,
            env=child_env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError("convert_hf_to_gguf.py failed: " + report_md.last_line(done.stderr))
        quantize = (
            "import ctypes, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), "
            "ctypes.byref(p)))"
        )
        done = subprocess.run(
            [sys.executable, "-c", quantize, str(f16), str(q4)], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            raise RuntimeError("llama_model_quantize failed: " + report_md.last_line(done.stderr))
        stamp.write_text(source_id)
    return {"f16": f16, "q4_0": q4, "gguf_py": sources / "gguf-py"}


LLAMA_QUANTS = {"Q4_0": "int4", "Q4_K_M": "int4", "Q8_0": "int8"}
"""The frontier's llama.cpp points (file type -> phi3 precision): its fastest 4-bit type, the 4-bit type
Ollama and LM Studio users run, and 8-bit."""
BUILD_GGUF = (
    "import json, sys\n"
    "import phi3\n"
    "from phi3_llamacpp.api import gguf_path\n"
    "artifact = phi3.quantize(sys.argv[1], backend='llamacpp', precision=sys.argv[2], quant=sys.argv[3])\n"
    "print(json.dumps(str(gguf_path(artifact.path))))\n"
)


def phi3_ggufs(model: Path, env: dict[str, str]) -> dict[str, Path]:
    """The GGUF file phi3-llamacpp builds for each of :data:`LLAMA_QUANTS`, through phi3's and the plugin's
    public APIs (``phi3.quantize``, ``phi3_llamacpp.api.gguf_path``), each in a child process."""
    found: dict[str, Path] = {}
    for quant, precision in LLAMA_QUANTS.items():
        done = subprocess.run(
            [sys.executable, "-c", BUILD_GGUF, str(model), precision, quant],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"phi3-llamacpp {quant}: " + report_md.last_line(done.stderr))
        found[quant] = Path(json.loads(done.stdout.strip().splitlines()[-1]))
    return found


def llama_rows(frontier: dict[str, Path], common: dict[str, Any], gguf_py: Path | None) -> list[Row]:
    """One llama-cpp-python row per frontier GGUF; Q4_0's keeps the key the targets compare against."""
    rows = []
    for quant, path in frontier.items():
        rows.append(
            Row(
                "peer:llama_cpp" if quant == "Q4_0" else f"peer:llama_cpp_{quant.lower()}",
                f"llama.cpp {quant} (llama-cpp-python)",
                "peer",
                f"llama-{quant.lower()}",
                WORKERS,
                {**common, "mode": "llama_cpp", "gguf": str(path)},
                artifact=str(path),
                weights=roofline.gguf_file(path, gguf_py),
                precision=quant,
            )
        )
    return rows


def eos_ids(model: Path) -> list[int]:
    found: list[int] = []
    for name in ("generation_config.json", "config.json"):
        value = json.loads((model / name).read_text()).get("eos_token_id")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and item not in found:
                found.append(item)
    return found


def encode(model: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return [int(i) for i in Tokenizer.from_file(str(model / "tokenizer.json")).encode(text).ids]


def backend_state() -> dict[str, Any]:
    from phi3.plugins import get_registry

    states = {}
    for entry in get_registry().entries():
        info = entry.info
        states[entry.name] = {
            "status": entry.status.value,
            "detail": entry.detail,
            "engines": {e.name: (e.available, e.detail) for e in info.engines} if info else {},
            "default_engine": info.default_engine if info else None,
            "precisions": list(info.precisions) if info else [],
            "artifact_format": {e.name: e.artifact_format for e in info.engines} if info else {},
        }
    return states


def auto_pick(model: Path, precision: str = "int4") -> dict[str, str]:
    """What ``phi3.load(model)`` would pick here (backend="auto"): the row that is phi3's default path."""
    from phi3.errors import Phi3Error
    from phi3.plugins import get_registry
    from phi3.selection import select
    from phi3.speed_records import MeasuredSpeeds

    try:
        chosen = select(get_registry(), "auto", "auto", precision, None, MeasuredSpeeds.for_model(model))
    except Phi3Error as exc:
        return {"error": str(exc)}
    return {"backend": chosen.backend, "engine": chosen.engine.name, "device": chosen.device, "reason": chosen.reason}


def auto_pick_measured(model: Path, rows: Sequence[Row], precision: str = "int4") -> dict[str, str]:
    """What ``backend="auto"`` picks once ``phi3 bench`` has measured this machine.

    The phi3 rows' median decode rates, saved the way ``phi3 bench`` saves them
    (:mod:`phi3.speed_records`), fed to the same selection as :func:`auto_pick`. Nothing is written
    to any PHI3_HOME: the records go straight to the selection.
    """
    import datetime as _dt

    from phi3.errors import Phi3Error
    from phi3.plugins import get_registry
    from phi3.selection import select
    from phi3.speed_records import MeasuredSpeeds, SpeedRecord, model_size_bucket

    bucket = model_size_bucket(model)
    if bucket is None:
        return {"error": f"the size of {model} could not be told from its config.json"}
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    records = []
    for row in rows:
        if row.kind != "phi3" or row.error or not row.runs or row.spec.get("options"):
            continue  # (a recipe row is not what auto loads)
        rate = summarize(row.runs).get("decode_tokens_per_s", {}).get("median")
        if rate is None:
            continue
        device = str(row.runs[-1].get("device") or "CPU")
        kind = "npu" if device.upper().startswith("NPU") else "gpu" if device.upper().startswith("GPU") else "cpu"
        records.append(
            SpeedRecord(
                row.spec["backend"], row.spec["engine"], device, kind, precision, bucket, float(rate), when, str(model)
            )
        )
    try:
        chosen = select(get_registry(), "auto", "auto", precision, None, MeasuredSpeeds(bucket, records))
    except Phi3Error as exc:
        return {"error": str(exc)}
    return {"backend": chosen.backend, "engine": chosen.engine.name, "device": chosen.device, "reason": chosen.reason}


KNOWN_BACKENDS = ("openvino", "dml", "npu")
"""Backends with hand-made rows (engines, direct-call twins) below; every other installed backend that
builds int4 gets a generic phi3 row keyed by its name (its default engine, auto device)."""
SPEED_FIRST_RECIPE = "fast"
"""phi3-openvino's speed-first int4 recipe: a row of its own, judged against llama.cpp Q4_0 (issue 23 item 2)."""


def artifact_weights(path: Path, gguf_py: Path | None = None) -> roofline.WeightBytes | None:
    """Weight bytes of an artifact folder in whichever format it holds (None if none is recognised)."""
    if (path / "openvino_model.xml").is_file():
        return roofline.openvino_ir(path)
    if any(path.glob("*.onnx")):
        return roofline.onnx_model(path)
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        try:
            return roofline.gguf_file(ggufs[0], gguf_py)
        except ImportError:  # the gguf package reads it; without it, no roofline row
            return None
    if any(path.glob("*.safetensors")):
        return roofline.safetensors_folder(path)
    return None


# -- the interleaved measurement --------------------------------------------------------------


def run_rounds(rows: list[Row], runs: int, env: dict[str, str], scratch: Path, repeat: int = 1, of: int = 1) -> None:
    """One interleaved set: ``runs`` rounds over every row; ``repeat`` (1-based, of ``of``) tags the runs.

    Rounds are numbered across repeats (repeat 2's first round is ``runs + 1``), so pairing by
    round still pairs runs that ran back to back.
    """
    live = [r for r in rows if r.error is None]
    for row in live:
        if row.warm_dir is not None:
            continue  # warmed up in an earlier repeat
        row.warm_dir = scratch / f"warm-{row.key.replace('/', '_').replace(':', '_')}"
        row.warm_dir.mkdir(parents=True, exist_ok=True)
        log(f"warm-up (not measured): {row.label}")
        try:
            spec = row.child_spec("warm", row.warm_dir)
            spec["new_tokens"] = 2
            run_child(row.command, spec, env=env)
        except BenchChildError as exc:
            row.error = f"warm-up failed: {exc.message}"
    for index in range(runs):
        live = [r for r in rows if r.error is None]
        if not live:
            return
        shift = (index + repeat - 1) % len(live)  # each repeat starts one row later, too
        order = live[shift:] + live[:shift]
        number = (repeat - 1) * runs + index + 1
        for row in order:
            log(f"repeat {repeat}/{of}, round {index + 1}/{runs}: {row.label}")
            run: dict[str, Any] = {
                "round": number,
                "repeat": repeat,
                "load_average_1min": (load_average() or [None])[0],
            }
            try:
                if row.cold:
                    cold_dir = scratch / f"cold-{number}"
                    cold_dir.mkdir()
                    try:
                        cold = run_child(row.command, row.child_spec("cold", cold_dir), env=env)
                    finally:
                        shutil.rmtree(cold_dir, ignore_errors=True)
                    run["cold_load_s"] = cold["load_s"]
                warm = run_child(row.command, row.child_spec("warm", row.warm_dir), env=env)
            except BenchChildError as exc:
                row.error = f"repeat {repeat}, round {index + 1} failed: {exc.message}"
                continue
            run["warm_load_s"] = warm["load_s"]
            for key in (
                "first_call_s",
                "ttft_s",
                "decode_tokens_per_s",
                "e2e_tokens_per_s",
                "total_s",
                "new_tokens",
                "peak_rss_bytes",
                "token_ids",
                "prompt_tokens",
            ):
                if key in warm:
                    run[key] = warm[key]
            row.runs.append(run)


# -- parity -----------------------------------------------------------------------------------


def run_parity(
    model: Path,
    artifacts: dict[tuple[str, str], dict[str, str]],
    gguf: dict[str, Path] | None,
    frontier: dict[str, Path],
    new_tokens: int,
    ov_config: dict[str, str],
    env: dict[str, str],
    workdir: Path,
) -> dict[str, Any]:
    from phi3.testing.tiny_model import tokenizer_vocab_size

    used_vocab = tokenizer_vocab_size()
    prompts_ids = [encode(model, p) for p in PARITY_PROMPTS]
    ref_npy = workdir / "parity-ref.npy"
    base = {"prompts_ids": prompts_ids, "new_tokens": new_tokens, "used_vocab": used_vocab, "eos_ids": eos_ids(model)}
    log("parity: transformers fp32 reference")
    ref = run_child(WORKERS, {**base, "mode": "parity_ref", "checkpoint": str(model), "out_npy": str(ref_npy)}, env=env)
    base.update(continuations=ref["continuations"], ref_npy=str(ref_npy))
    results: list[dict[str, Any]] = []
    for (backend, precision), where in artifacts.items():
        item: dict[str, Any] = {"backend": backend, "precision": precision, "via": "phi3"}
        log(f"parity: {backend} {precision}")
        try:
            greedy = run_child(
                WORKERS,
                {
                    "mode": "phi3_greedy",
                    "model": str(model),
                    "backend": backend,
                    "engine": where["engine"],
                    "device": where["device"],
                    "precision": where.get("precision", precision),
                    "options": where.get("options") or {},
                    "prompts": list(PARITY_PROMPTS),
                    "new_tokens": new_tokens,
                },
                env=env,
            )
            item.update(report_md.greedy_agreement(greedy["continuations"], ref["continuations"]))
            ggufs = sorted(Path(where["path"]).glob("*.gguf"))
            if ggufs:  # phi3-llamacpp (or any backend whose artifact is a GGUF): score it with llama.cpp
                scored = run_child(WORKERS, {**base, "mode": "parity_llama", "gguf": str(ggufs[0])}, env=env)
                scored.pop("continuations", None)  # the free-running columns above came through phi3
                item.update(scored)
            else:
                mode = "parity_og" if backend == "dml" else "parity_ov"
                config = ov_config if backend == "openvino" else {}
                item.update(
                    run_child(WORKERS, {**base, "mode": mode, "artifact": where["path"], "ov_config": config}, env=env)
                )
        except BenchChildError as exc:
            item["error"] = exc.message
        results.append(item)
    llama_files = dict(frontier)
    if gguf is not None:
        llama_files.setdefault("Q4_0", gguf["q4_0"])
        llama_files["F16"] = gguf["f16"]
    for precision, path in llama_files.items():
        log(f"parity: llama.cpp {precision}")
        item = {"backend": "llama.cpp", "precision": precision, "via": "llama-cpp-python"}
        try:
            got = run_child(WORKERS, {**base, "mode": "parity_llama", "gguf": str(path)}, env=env)
            item.update(report_md.greedy_agreement(got.pop("continuations"), ref["continuations"]))
            item.update(got)
        except BenchChildError as exc:
            item["error"] = exc.message
        results.append(item)
    return {"prompts": list(PARITY_PROMPTS), "new_tokens": new_tokens, "used_vocab": used_vocab, "results": results}


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per row and repeat (default 5)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole interleaved set this many times; RESULTS.md reports medians across repeats with "
        "their spread and calls a target decided only when every repeat agrees (default 1)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--parity-tokens", type=int, default=32, help="tokens compared per parity prompt")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the (slow) transformers fp32 row")
    parser.add_argument(
        "--keep-cache",
        action="store_true",
        help="reuse the previous run's phi3 cache (the first-run measurement is then skipped)",
    )
    parser.add_argument(
        "--shape",
        choices=("mid", "small"),
        default="mid",
        help="mid: Phi-3-mini layer shapes (the benchmark); small: a quick check of this script",
    )
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    reporting.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.runs < 1:
        parser.error("--repeat and --runs must be at least 1")
    return args


def bench_env(workdir: Path, keep_cache: bool) -> dict[str, str]:
    """The children's environment: a phi3 home of this run's own (emptied unless --keep-cache), offline."""
    home = workdir / "phi3-home"
    if home.exists() and not keep_cache:
        shutil.rmtree(home)
    env = {
        **os.environ,
        "PHI3_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TQDM_DISABLE": "1",
    }
    os.environ.update({k: env[k] for k in ("PHI3_HOME", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")})
    return env


DIRECT_TWINS = (
    # (phi3 backend, engine, group, device, direct key, direct label, worker mode, uses phi3-openvino's properties)
    ("openvino", "genai", "ov-genai", "auto", "direct:ov_genai", "openvino_genai.LLMPipeline", "ov_genai", True),
    (
        "openvino",
        "optimum",
        "ov-optimum",
        "auto",
        "direct:ov_optimum",
        "optimum-intel OVModelForCausalLM",
        "ov_optimum",
        True,
    ),
    ("dml", "genai", "dml", "auto", "direct:og", "onnxruntime_genai Generator", "og", False),
    # phi3-npu: no NPU here, so its genai engine runs on its explicit CPU override (same pipeline, NPU export
    # recipe); the direct call gets the properties phi3-npu uses there (CACHE_DIR only)
    (
        "npu",
        "genai",
        "npu-genai",
        "CPU",
        "direct:npu_genai",
        "openvino_genai.LLMPipeline (NPU-recipe IR)",
        "ov_genai",
        False,
    ),
)
"""The hand-made rows: each phi3 backend/engine with the direct library call on the same artifact."""


class Suite:
    """One run: the model, the rows it measures, what it skipped, and the raw results it collects."""

    def __init__(self, args: argparse.Namespace, results: dict[str, Any], workdir: Path, env: dict[str, str]) -> None:
        self.args, self.results, self.workdir, self.env = args, results, workdir, env
        self.skipped: list[str] = results["skipped"]
        self.rows: list[Row] = []
        self.artifacts: dict[tuple[str, str], dict[str, Any]] = {}
        self.states: dict[str, Any] = {}
        self.model = Path()
        self.common: dict[str, Any] = {}
        self.gguf: dict[str, Path] | None = None
        self.frontier: dict[str, Path] = {}

    def prepare(self) -> None:
        """list-backends timing, the model, auto's fresh-install pick, the bandwidth, the exact prompt."""
        args, results = self.args, self.results
        log("phi3 list-backends timing")
        results["list_backends"] = time_list_backends(self.env)
        self.states = results["backends"] = backend_state()
        log("building the mid-size model (Phi-3-mini layer shapes, 4 layers)")
        started = time.perf_counter()
        shape = MID_SHAPE if args.shape == "mid" else SMALL_SHAPE
        self.model = build_model(self.workdir, shape, "phi3-mid-4l" if args.shape == "mid" else "phi3-small-check")
        results["model"] = {
            "path": str(self.model),
            "shape": shape,
            "build_s": time.perf_counter() - started,
            "weights": roofline.safetensors_folder(self.model).__dict__,
        }
        results["auto"] = auto_pick(self.model)
        log("measuring memory bandwidth")
        results["bandwidth"] = roofline.measure_bandwidth()
        prompt = bench.build_prompt(self.model, args.prompt_tokens)
        prompt_ids = encode(self.model, prompt)
        assert len(prompt_ids) == args.prompt_tokens, (len(prompt_ids), args.prompt_tokens)
        results["prompt"] = prompt
        self.common = {
            "prompt": prompt,
            "prompt_ids": prompt_ids,
            "new_tokens": args.new_tokens,
            "eos_ids": eos_ids(self.model),
            "warmup_prompt": bench.WARMUP_PROMPT,
            "warmup_ids": encode(self.model, bench.WARMUP_PROMPT),
        }
        ov_config: dict[str, str] = {}
        with contextlib.suppress(ImportError):
            from phi3_openvino.api import compile_defaults

            ov_config = compile_defaults("cpu", "int4")  # what phi3-openvino compiles int4 with (plus CACHE_DIR)
        results["ov_config"] = ov_config
        og_threads = None
        with contextlib.suppress(ImportError):
            from phi3_dml.api import default_intra_op_threads

            og_threads = default_intra_op_threads()  # what phi3-dml gives the CPU provider by default
        results["og_threads"] = og_threads

    def usable(self, backend: str, engine: str, device: str = "auto") -> bool:
        state = self.states.get(backend)
        if state is None:
            self.skipped.append(f"{backend}/{engine}: the phi3-{backend} plugin is not installed")
            return False
        if state["status"] != "available" and not (state["status"] == "no device" and device != "auto"):
            self.skipped.append(f"{backend}/{engine}: {state['status']}: {state['detail']}")
            return False
        available, detail = state["engines"].get(engine, (False, f"no engine {engine}"))
        if not available:
            self.skipped.append(f"{backend}/{engine}: engine unusable: {detail}")
        return bool(available)

    def first_and_second(self) -> None:
        """First run (quantizes) vs second run (everything cached), `phi3 generate` in new processes."""
        self.results["first_second"] = []
        for backend, engine in (("openvino", "genai"), ("dml", "genai")):
            if backend not in self.states or self.states[backend]["status"] != "available":
                continue
            if self.args.keep_cache:
                self.skipped.append(f"first-run measurement of {backend}: --keep-cache reuses built artifacts")
                continue
            log(f"first and second `phi3 generate` on {backend}/{engine}")
            self.results["first_second"].append(
                first_and_second_run(backend, engine, self.model, self.env, self.workdir)
            )

    def phi3_row(
        self,
        backend: str,
        engine: str,
        group: str,
        device: str = "auto",
        gguf_py: Path | None = None,
        recipe: str | None = None,
    ) -> Row | None:
        """phi3's int4 artifact for backend/engine (its default recipe, or ``-O recipe=...``), and its row."""
        if not self.usable(backend, engine, device):
            return None
        options = {"recipe": recipe} if recipe else {}
        precision = f"int4 recipe={recipe}" if recipe else "int4"  # the label (rows, quality) it is known by
        log(f"artifact for {backend}/{engine} ({precision})")
        try:
            prepared = prepare_phi3(
                self.model, backend, engine, "int4", self.args.prompt_tokens, self.env, device, options
            )
        except BenchChildError as exc:
            self.skipped.append(f"{backend}/{engine}: building the {precision} artifact failed: {exc.message}")
            return None
        path = prepared["artifact"]["path"]
        self.artifacts.setdefault(
            (backend, precision),
            {"path": path, "engine": engine, "device": device, "precision": "int4", "options": options},
        )
        spec = {
            "model": str(self.model),
            "revision": None,
            "backend": backend,
            "engine": engine,
            "device": device,
            "precision": "int4",
            "options": options,
            "prompt": self.common["prompt"],
            "new_tokens": self.args.new_tokens,
            "prompt_tokens": self.args.prompt_tokens,
        }
        where = "" if device == "auto" else f" ({device})"
        row = Row(
            f"phi3:{backend}/{engine}" + (f"+{recipe}" if recipe else ""),
            f"phi3 {backend}/{engine}{where}" + (f" -O recipe={recipe}" if recipe else ""),
            "phi3",
            group,
            PHI3_WORKER,
            spec,
            cold=True,
            artifact=path,
            weights=artifact_weights(Path(path), gguf_py),
            precision=precision,
        )
        self.rows.append(row)
        return row

    def speed_first_row(self) -> None:
        """phi3-openvino's speed-first recipe (``-O recipe=fast``), held to llama.cpp Q4_0's speed and KL."""
        if "openvino" in self.states:
            self.phi3_row("openvino", "genai", "phi3-openvino-fast", recipe=SPEED_FIRST_RECIPE)

    def paired_rows(self) -> None:
        """Each hand-made phi3 row, then the direct library call on the same artifact."""
        for backend, engine, group, device, key, label, mode, ov_properties in DIRECT_TWINS:
            row = self.phi3_row(backend, engine, group, device=device)
            if row is None:
                continue
            spec = {**self.common, "mode": mode, "artifact": row.artifact}
            if mode == "ov_genai" or mode == "ov_optimum":
                spec["ov_config"] = self.results["ov_config"] if ov_properties else {}
            if mode == "og":
                spec["intra_op_num_threads"] = self.results.get("og_threads")
            self.rows.append(
                Row(
                    key,
                    label,
                    "direct",
                    group,
                    WORKERS,
                    spec,
                    artifact=row.artifact,
                    weights=row.weights,
                    precision="int4",
                )
            )
        if "npu" in self.states:
            if self.usable("npu", "npu-library", "CPU"):
                self.skipped.append(
                    "npu/npu-library (intel-npu-acceleration-library): installed, but this suite has no "
                    "direct-call worker for it yet"
                )
            else:
                self.skipped[-1] += " (so intel-npu-acceleration-library is not compared either)"

    def llama_rows(self) -> None:
        """llama.cpp's own converter (F16, Q4_0 for parity), then the frontier rows: llama.cpp at Q4_0, Q4_K_M
        and Q8_0 on the GGUFs phi3-llamacpp builds (without the plugin: the converter's Q4_0 only)."""
        try:
            log("llama.cpp: converting to GGUF f16 and quantizing to Q4_0")
            self.gguf = build_gguf(self.model, self.workdir, self.env)
        except (RuntimeError, subprocess.CalledProcessError, StopIteration) as exc:
            self.skipped.append(f"llama.cpp: {exc}")
        if "llamacpp" in self.states:
            log("llama.cpp frontier: GGUFs built by phi3-llamacpp (" + ", ".join(LLAMA_QUANTS) + ")")
            try:
                self.frontier = phi3_ggufs(self.model, self.env)
            except RuntimeError as exc:
                self.skipped.append(f"llama.cpp frontier: {exc}")
        elif self.gguf is not None:
            self.skipped.append(
                "llama.cpp Q4_K_M / Q8_0: phi3-llamacpp is not installed (Q4_0 from llama.cpp's converter)"
            )
            self.frontier = {"Q4_0": self.gguf["q4_0"]}
        self.rows += llama_rows(self.frontier, self.common, self.gguf["gguf_py"] if self.gguf else None)
        self.results["frontier_ggufs"] = {quant: str(path) for quant, path in self.frontier.items()}

    def other_backends(self) -> None:
        """Every other installed backend (e.g. phi3-llamacpp, entry point "llamacpp"): a phi3 row keyed by its
        name, on its default engine; no direct-call twin (this suite cannot know its internals)."""
        for name, state in sorted(self.states.items()):
            if name in KNOWN_BACKENDS or "int4" not in state.get("precisions", []):
                continue
            engine = state.get("default_engine")
            if engine is None:
                self.skipped.append(f"{name}: no usable engine ({state['detail'] or state['status']})")
                continue
            self.phi3_row(name, engine, f"phi3-{name}", gguf_py=self.gguf["gguf_py"] if self.gguf else None)

    def baseline(self) -> None:
        if self.args.skip_baseline:
            self.skipped.append("transformers fp32 baseline: --skip-baseline")
            return
        self.rows.append(
            Row(
                "baseline:hf",
                "transformers fp32 eager",
                "baseline",
                "hf",
                WORKERS,
                {**self.common, "mode": "hf", "checkpoint": str(self.model)},
                artifact=str(self.model),
                weights=roofline.safetensors_folder(self.model),
                precision="fp32",
            )
        )

    def rounds(self) -> None:
        """The interleaved rounds, every repeat; then what auto would pick from them."""
        scratch = self.workdir / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            for repeat in range(1, self.args.repeat + 1):
                run_rounds(self.rows, self.args.runs, self.env, scratch, repeat, self.args.repeat)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.results["rows"] = [report_md.row_dict(r) for r in self.rows]
        try:
            self.results["auto_measured"] = auto_pick_measured(self.model, self.rows)
        except Exception as exc:  # never lose the measured rounds to the report's extra line
            self.results["auto_measured"] = {"error": f"{type(exc).__name__}: {exc}"}

    def parity(self) -> None:
        """Teacher-forced KL / top-1 against fp32 for every artifact (and greedy agreement)."""
        if self.args.skip_parity:
            self.skipped.append("parity: --skip-parity")
            return
        parity_artifacts = dict(self.artifacts)
        for backend, precision in (("openvino", "int8"), ("openvino", "fp16"), ("dml", "int8")):
            if self.states.get(backend, {}).get("status") != "available":
                continue
            log(f"artifact for parity: {backend} {precision}")
            try:
                prepared = prepare_phi3(self.model, backend, "genai", precision, 8, self.env)
                parity_artifacts[(backend, precision)] = {
                    "path": prepared["artifact"]["path"],
                    "engine": "genai",
                    "device": "auto",
                }
            except BenchChildError as exc:
                self.skipped.append(f"parity {backend} {precision}: {exc.message}")
        try:
            self.results["parity"] = run_parity(
                self.model,
                parity_artifacts,
                self.gguf,
                self.frontier,
                self.args.parity_tokens,
                self.results["ov_config"],
                self.env,
                self.workdir,
            )
        except BenchChildError as exc:
            self.skipped.append(f"parity: the transformers reference failed: {exc.message}")

    def charts(self) -> None:
        """RESULTS.png (speed per row) and RESULTS-frontier.png (KL against decode tok/s)."""
        args, output = self.args, self.args.output
        chart = output.with_suffix(".png")
        try:
            bench.plot_report(
                {
                    "settings": {
                        "model": self.model.name,
                        "prompt_tokens": args.prompt_tokens,
                        "new_tokens": args.new_tokens,
                        "runs": args.runs * args.repeat,
                    },
                    "results": [
                        {
                            "backend": r.label,
                            "engine": r.kind,
                            "device": "CPU",
                            "precision": r.precision,
                            "summary": summarize(r.runs),
                        }
                        for r in self.rows
                        if r.error is None and r.runs
                    ],
                },
                chart,
            )
            self.results["chart"] = chart.name
        except Exception as exc:  # matplotlib missing: the tables are the results, the chart is a convenience
            self.skipped.append(f"chart: {exc}")
        frontier_chart = output.with_name(f"{output.stem}-frontier.png")
        try:
            report_md.plot_frontier(json.loads(json.dumps(self.results, default=str)), frontier_chart)
            self.results["frontier_chart"] = frontier_chart.name
        except Exception as exc:  # matplotlib missing, or nothing to plot: the table is the result
            self.skipped.append(f"frontier chart: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        reporting.rerender(args.output, report_md.render)
        return 0
    meta = reporting.run_metadata("run.py", argv, reporting.refuse_if_noisy(args.noisy))
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = bench_env(workdir, args.keep_cache)
    results: dict[str, Any] = {
        **meta,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": vars(args) | {"workdir": str(workdir), "output": str(args.output)},
        "machine": bench.machine_info(),
        "load_average_start": meta["load_average"]["start"],
        "skipped": [],
    }
    suite = Suite(args, results, workdir, env)
    for step in (
        suite.prepare,
        suite.first_and_second,
        suite.paired_rows,
        suite.speed_first_row,
        suite.llama_rows,
        suite.other_backends,
        suite.baseline,
        suite.rounds,
        suite.parity,
        suite.charts,
    ):
        step()
    reporting.finish(results)
    results["load_average_end"] = results["load_average"]["end"]
    results["elapsed_s"] = time.perf_counter() - STARTED
    # what the report quotes from its neighbours, copied now so that it renders from this JSON alone
    results["family_tables"] = report_md.family_quality_tables(args.output.parent)
    results["companions"] = [name for name, _ in report_md.COMPANION_REPORTS if (args.output.parent / name).is_file()]
    reporting.write(args.output, json.loads(json.dumps(results, default=str)), report_md.render)
    log(f"wrote {args.output} in {results['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
