"""Registers and probes fine, then fails with a raw exception in phi3_load."""

from __future__ import annotations

from phi3 import hookimpl
from phi3_broken_example import _common


@hookimpl
def phi3_backend_info():  # type: ignore[no-untyped-def]
    return _common.info("load_raises")


@hookimpl
def phi3_quantize(request, output_dir, progress):  # type: ignore[no-untyped-def]
    return _common.quantize(output_dir)


@hookimpl
def phi3_load(request):  # type: ignore[no-untyped-def]
    raise ZeroDivisionError("vendor runtime divided by zero")


@hookimpl
def phi3_generate(session, prompt, config):  # type: ignore[no-untyped-def]
    return iter(())


@hookimpl
def phi3_apply_chat_template(session, messages):  # type: ignore[no-untyped-def]
    return ""
