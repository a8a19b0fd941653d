"""Containing intel-npu-acceleration-library's bugs and side effects (used inside the worker only).

The library (1.4.0, archived) has four problems phi3 must not pass on to users. Each is handled
here, and every handler runs in the worker process that :mod:`phi3_npu.library_worker` is:

1. **Writes into the current directory.** ``./nc_workspace/`` (neural-compressor's tuning history,
   every int4/int8 quantization), ``./cache/models/...`` (the pickled model ``from_pretrained``
   exports) and ``./cache/<n>.blob`` (OpenVINO's compiled kernels: the C++ side calls
   ``ov::cache_dir("cache")`` before each kernel compile, and kernels compile lazily, once per new
   input shape, *during generation*). The first two are settings (:func:`redirect_writes`); the
   third follows the process's cwd at every forward call. Changing the cwd of the user's process
   for the whole life of a model is not acceptable (any thread of theirs resolving a relative path
   would land in phi3's cache), so the library runs in a worker process whose cwd *is* the state
   folder in phi3's cache: ``./cache`` there is the kernel-blob cache, reused across loads.
2. **A quantized model after another one aborts the process** (``terminate called without an
   active exception``): the library's runtime keeps compiled kernels in a module-global cache keyed
   by shape only. :func:`fresh_runtime` clears it before every load; and since each worker hosts a
   single model, kernels of two models never meet.
3. **A second identical ``from_pretrained`` fails**: with ``export=True`` (its default) it pickles
   the model into ``./cache/models`` and the next call ``torch.load``\\s it, which torch >= 2.6
   refuses (weights-only unpickling). The worker passes ``export=False`` and points
   ``modelling.get_cache_dir`` at an empty private folder, because ``export=False`` still *reads*
   an existing pickle.
4. **Silent device fallback**: without an NPU it compiles for OpenVINO ``AUTO`` ("Library will
   fallback to AUTO device selection mode"). :func:`pin_device` makes every kernel compile for the
   device phi3 resolved (``NPU``, or ``CPU`` when the user asked for it), so the device a result
   reports is the one that ran.

It also hides a broken torchvision (see :mod:`phi3.vendor_compat`), which transformers
would otherwise import and crash on.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOB_CACHE = "cache"
"""The folder name the library's C++ side hard-codes (relative to the cwd)."""
BLOB_CACHE_LIMIT_BYTES = 512 * 1024 * 1024
"""Kernel blobs are compiled per input shape, so the cache grows with every new prompt length."""
STALE_RUN_S = 24 * 3600


def redirect_writes(run_dir: Path) -> None:
    """Send neural-compressor's workspace and the library's model export folder into ``run_dir``."""
    import intel_npu_acceleration_library.modelling as modelling
    import neural_compressor

    neural_compressor.set_workspace(str(run_dir / "nc_workspace") + os.sep)
    models = str(run_dir / "models")  # never created: export=False writes nothing, and nothing is read
    replacement: Callable[[], str] = lambda: models  # noqa: E731
    modelling.get_cache_dir = replacement


def fresh_runtime() -> None:
    """Drop the library's global kernel cache (keyed by shape, not by model: see bug 2)."""
    from intel_npu_acceleration_library.backend import clear_cache

    clear_cache()


def pin_device(pinned: str) -> None:
    """Make every kernel the library builds compile for ``pinned`` instead of its NPU-or-AUTO default."""
    from intel_npu_acceleration_library.backend import factory

    cls: Any = factory.NNFactory
    original = getattr(cls, "_phi3_original_init", cls.__init__)

    def init(self: Any, profile: bool = False, device: str | None = None) -> None:
        del device  # every subclass passes its "NPU" default through here
        original(self, profile, pinned)

    cls._phi3_original_init = original
    cls.__init__ = init


def prune(state_root: Path, limit_bytes: int = BLOB_CACHE_LIMIT_BYTES) -> None:
    """Keep the kernel-blob cache under ``limit_bytes`` (oldest first) and drop stale run folders.

    Run folders of workers that were killed (a crash, ``kill -9`` of the user's process) are left
    behind; any older than a day is removed. Concurrent workers only ever lose a blob they can
    recompile.
    """
    blobs = state_root / BLOB_CACHE
    if blobs.is_dir():
        files = []
        for path in blobs.iterdir():
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= limit_bytes:
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass
    runs = state_root / "run"
    if runs.is_dir():
        now = time.time()
        for path in runs.iterdir():
            try:
                if now - path.stat().st_mtime > STALE_RUN_S:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def enter(run_dir: Path, device: str) -> None:
    """Everything before the first library call: hide torchvision, redirect, clear, pin the device."""
    from phi3.vendor_compat import hide_broken_torchvision

    hide_broken_torchvision()
    redirect_writes(run_dir)
    fresh_runtime()
    pin_device(device)


__all__ = ["BLOB_CACHE", "enter", "fresh_runtime", "pin_device", "prune", "redirect_writes"]
