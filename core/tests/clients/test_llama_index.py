"""llama-index's OpenAILike against ``phi3 serve smoke`` (the default engine).

Every llama-index-llms-openai release needs openai<3, which phi3's other client tests cannot share a
virtualenv with, so this runs in a virtualenv of its own (``nox -s server`` builds it) and starts the
server with the server session's Python (``PHI3_SERVER_PYTHON``). Nothing here imports phi3.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_index.llms.openai_like", reason="runs in nox -s server's llama-index virtualenv")
SERVER_PYTHON = os.environ.get("PHI3_SERVER_PYTHON")
pytestmark = pytest.mark.skipif(not SERVER_PYTHON, reason="needs PHI3_SERVER_PYTHON (nox -s server sets it)")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as home:
        log = Path(home) / "serve.log"
        env = {**os.environ, "PHI3_HOME": home, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(SERVER_PYTHON), "-m", "phi3", "serve", "smoke", "--preload", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                deadline = time.monotonic() + 300
                for _ in range(3000):
                    assert server.poll() is None, log.read_text()
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, f"phi3 serve did not start:\n{log.read_text()}"
                    time.sleep(0.1)
                yield f"http://127.0.0.1:{port}/v1"
            finally:
                server.send_signal(signal.SIGINT)
                assert server.wait(60) == 0, log.read_text()


def test_openai_like_complete_chat_and_stream(base_url: str) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="smoke",
        api_base=base_url,
        api_key="unused",
        is_chat_model=True,
        max_tokens=12,
        temperature=0,
        max_retries=0,
        timeout=120,
    )
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi!")]
    answer = llm.chat(messages)
    assert answer.message.role == "assistant" and isinstance(answer.message.content, str)
    streamed = "".join(piece.delta or "" for piece in llm.stream_chat(messages))
    assert streamed == answer.message.content  # greedy: the same answer either way
    completed = OpenAILike(
        model="smoke", api_base=base_url, api_key="unused", max_tokens=8, temperature=0, max_retries=0
    ).complete("The capital of France is")
    assert isinstance(completed.text, str) and completed.raw is not None
