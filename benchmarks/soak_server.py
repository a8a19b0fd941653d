"""``phi3 serve`` with one extra backend, ``flaky``, for the server soak (benchmarks/server_soak.py).

``flaky`` is the reference backend under another name, except that a generation whose prompt holds
:data:`FAIL_MARKER` raises a ``BackendError`` after its :data:`FAIL_AFTER`-th chunk: a backend failing
mid-stream, per request and deterministically, so the soak knows which outcome each request must get
(a streamed one: an error event and no ``[DONE]``; a non-streamed one: HTTP 500).

The backend is registered in the process-wide plugin registry, then the real CLI runs::

    python benchmarks/soak_server.py serve MODEL -b flaky -p fp32 --port PORT
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import phi3
from phi3.hookspecs import hookimpl
from phi3.testing import reference_backend
from phi3.types import BackendInfo, ChatMessage, Chunk, LoadRequest, SessionHandle

NAME = "flaky"
FAIL_MARKER = "SOAK-FAIL-MIDSTREAM"
FAIL_AFTER = 3


class Flaky:
    """The reference backend as ``flaky``; prompts holding :data:`FAIL_MARKER` fail after :data:`FAIL_AFTER` chunks."""

    @hookimpl
    def phi3_backend_info(self) -> BackendInfo:
        return dataclasses.replace(reference_backend.phi3_backend_info(), name=NAME)

    @hookimpl
    def phi3_quantize(self, request: Any, output_dir: Path, progress: Any) -> Mapping[str, Any]:
        return reference_backend.phi3_quantize(request, output_dir, progress)

    @hookimpl
    def phi3_load(self, request: LoadRequest) -> SessionHandle:
        return dataclasses.replace(reference_backend.phi3_load(request), backend=NAME)

    @hookimpl
    def phi3_apply_chat_template(self, session: SessionHandle, messages: Sequence[ChatMessage]) -> str:
        return reference_backend.phi3_apply_chat_template(session, messages)

    @hookimpl
    def phi3_generate(self, session: SessionHandle, prompt: str, config: phi3.GenerationConfig) -> Iterator[Chunk]:
        chunks = reference_backend.phi3_generate(session, prompt, config)
        return _failing(chunks) if FAIL_MARKER in prompt else chunks


def _failing(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    try:
        for index, chunk in enumerate(chunks):
            yield chunk
            if index + 1 == FAIL_AFTER:
                raise phi3.errors.BackendError(f"the soak's flaky backend failed after {FAIL_AFTER} chunks")
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def main(argv: Sequence[str]) -> None:
    phi3.plugins.get_registry().register(Flaky(), NAME)
    from phi3.cli import cli

    cli.main(args=list(argv), prog_name="phi3")


if __name__ == "__main__":
    main(sys.argv[1:])
