"""Implements a misspelt hook and lacks phi3_load when registered alone."""

from __future__ import annotations

from phi3 import hookimpl
from phi3_broken_example import _common


@hookimpl
def phi3_backend_info():  # type: ignore[no-untyped-def]
    return _common.info("missing_hooks")


@hookimpl
def phi3_quantize(request, output_dir, progress):  # type: ignore[no-untyped-def]
    return _common.quantize(output_dir)


@hookimpl
def phi3_generate(session, prompt, config):  # type: ignore[no-untyped-def]
    return iter(())


@hookimpl
def phi3_apply_chat_template(session, messages):  # type: ignore[no-untyped-def]
    return ""


def phi3_load(request):  # type: ignore[no-untyped-def]
    """Not marked as a hookimpl: the typo'd one below is the "implementation"."""
    raise AssertionError("never called")


@hookimpl
def phi3_lod(request):  # type: ignore[no-untyped-def]
    raise AssertionError("never called")
