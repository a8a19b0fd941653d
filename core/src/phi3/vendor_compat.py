"""Keep a broken torchvision from breaking transformers (and so every Phi-3 export and the test kit).

optimum-intel declares ``torchvision`` as a hard dependency, but uses it only for vision-language
models. With a CPU-only torch (e.g. ``torch==2.13.0+cpu``) pip installs the matching torchvision
wheel from PyPI, which is a CUDA build whose native ops cannot load: ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist``. transformers imports torchvision as soon
as it is *installed* (``image_utils``, pulled in by every model class including ``Phi3ForCausalLM``),
so the whole export would fail for a package Phi-3 never uses.

:func:`hide_broken_torchvision` imports torchvision once; if that fails, it drops the half-imported
modules and marks torchvision as absent in ``sys.modules``, so ``importlib.util.find_spec`` (what
transformers checks) reports it missing and text models load normally. A working torchvision is
left alone. It lives in phi3-core (stdlib only; torchvision is imported only when called) so the
test kit, the smoke model and every plugin share one copy.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("phi3")

_checked = False


def hide_broken_torchvision() -> bool:
    """Return True if torchvision was installed but broken and is now hidden from this process."""
    global _checked
    if _checked:
        return sys.modules.get("torchvision", object()) is None
    _checked = True
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"] is None
    try:
        import torchvision  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    except Exception as exc:  # RuntimeError from its native op registration, OSError from a missing lib
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # find_spec() now returns None
        log.debug("torchvision is installed but cannot be imported (%s); hidden from transformers", exc)
        return True
    return False


__all__ = ["hide_broken_torchvision"]
