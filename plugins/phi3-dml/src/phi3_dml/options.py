"""The dml backend's options, declared as typed specs that phi3 validates before any hook runs.

Artifact options (in the cache key, given to ``phi3_quantize``): the execution provider the graph is
built for, and the int4/int8 builder settings. ``block_size`` and ``accuracy_level`` use the names
the builder honours today (the old ``int4_block_size``/``int4_accuracy_level`` are only deprecated
aliases). ``lm_head`` (int4 only): ``int4`` (the builder's default: every MatMul int4) or ``int8``,
the builder's ``matmul_mixed_precision=last_matmul:int8`` (the output projection, the single largest
and most output-sensitive matrix, kept at int8: closer to fp32, more bytes read per token).
``benchmarks/TUNING.md`` measures what each costs.

Load options (given to ``phi3_load``): extra execution-provider options for dml/cuda (e.g.
``{"enable_graph_capture": "0"}``, which works around DirectML drivers that replay captured graphs
wrongly), the CPU thread count, and the context (tokens) phi3 lets one generation reach.

Checks that need more than one value (a precision the provider cannot build, see
:mod:`phi3_dml.targets`) or the model (a context longer than the model's) stay in the backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from phi3.types import OptionSpec

EXECUTION_PROVIDERS = ("cpu", "dml", "cuda")
BLOCK_SIZES = (16, 32, 64, 128, 256)
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
QUANTIZED = ("int4", "int8")
DEFAULT_BLOCK_SIZE = 32
LM_HEAD_TYPES = ("int4", "int8")


def max_threads() -> int:
    """The most intra-op threads worth starting: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


SYSFS_CPUS = Path("/sys/devices/system/cpu")


def physical_cores(cpus: Iterable[int] | None = None, sysfs: Path = SYSFS_CPUS) -> int | None:
    """Physical cores among ``cpus`` (default: the CPUs this process may run on), from Linux's CPU
    topology; None where that cannot be read (other systems: ONNX Runtime's own default stands).

    phi3-dml's default ``intra_op_num_threads`` on the CPU provider. ONNX Runtime's own default ran
    one thread on a 2-core Linux VM (two cores, one thread each), decoding about half as fast as two
    threads in every repeat (``benchmarks/TUNING-decisions.md``). Hyper-threads of one core count once,
    as ONNX Runtime intends.
    """
    try:
        chosen = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
        cores = set()
        for cpu in chosen:
            topology = sysfs / f"cpu{cpu}" / "topology"
            package = (topology / "physical_package_id").read_text(encoding="ascii").strip()
            cores.add((package, (topology / "core_id").read_text(encoding="ascii").strip()))
    except (AttributeError, OSError):
        return None
    return len(cores) or None


ARTIFACT_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "execution_provider",
        "choice",
        "the provider the graph is built for (default: the installed runtime's GPU provider, else cpu)",
        choices=EXECUTION_PROVIDERS,
        artifact=True,
    ),
    OptionSpec(
        "block_size",
        "choice",
        "weights per int4/int8 quantization block",
        default=DEFAULT_BLOCK_SIZE,
        choices=BLOCK_SIZES,
        artifact=True,
        precisions=QUANTIZED,
    ),
    OptionSpec(
        "accuracy_level",
        "choice",
        "MatMulNBits compute type (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8)",
        choices=ACCURACY_LEVELS,
        artifact=True,
        precisions=QUANTIZED,
    ),
    OptionSpec(
        "lm_head",
        "choice",
        "the output projection's type: int4 like every MatMul, or int8 (closer to fp32, more bytes a token)",
        default="int4",
        choices=LM_HEAD_TYPES,
        artifact=True,
        precisions=("int4",),
    ),
)


def load_options() -> tuple[OptionSpec, ...]:
    """The load options; ``intra_op_num_threads`` is capped at this machine's logical CPUs (ONNX
    Runtime starts every thread it is told to: 100000 of them hangs the process for minutes)."""
    return (
        OptionSpec(
            "provider_options",
            "mapping",
            'extra execution-provider options for dml/cuda devices, e.g. {"enable_graph_capture": "0"}',
        ),
        OptionSpec(
            "intra_op_num_threads",
            "int",
            "CPU threads per operator, at most this machine's logical CPUs (default on the cpu provider: its"
            " physical cores)",
            min=1,
            max=max_threads(),
        ),
        OptionSpec(
            "context_length",
            "int",
            "tokens one generation may reach (default: the model's, where its KV cache fits in memory)",
            min=2,
        ),
    )


def options() -> tuple[OptionSpec, ...]:
    """Every option the backend declares (``BackendInfo.options``)."""
    return (*ARTIFACT_OPTIONS, *load_options())


__all__ = [
    "ACCURACY_LEVELS",
    "ARTIFACT_OPTIONS",
    "BLOCK_SIZES",
    "DEFAULT_BLOCK_SIZE",
    "EXECUTION_PROVIDERS",
    "LM_HEAD_TYPES",
    "QUANTIZED",
    "load_options",
    "max_threads",
    "options",
]
