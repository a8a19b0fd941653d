"""A request waiting in the queue whose client leaves gives up its place while it waits.

The request ahead is held inside the backend (``declaring_backend``'s ``hold``) for as long as the
test needs, so "noticed while waiting, not when its turn comes" is checked on any machine speed:
the leaver is counted as abandoned while the request ahead is still decoding, and it never reaches
the backend.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import in_process_server

MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)]
    return sum(values)


def _wait(what: str, check: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.fixture
def held_server() -> Iterator[tuple[str, Any, threading.Event]]:
    from declaring_backend import Declaring

    hold = threading.Event()
    plugin = Declaring((), hold=hold)
    with in_process_server(plugin, max_queue=4) as url:
        try:
            yield url, plugin, hold
        finally:
            hold.set()


def test_a_queued_client_that_leaves_gives_up_its_place_while_waiting(
    held_server: tuple[str, Any, threading.Event],
) -> None:
    url, plugin, hold = held_server
    body = {"model": "smoke", "messages": MESSAGES, "max_tokens": 8}
    with httpx.Client(timeout=60) as client:
        first = client.send(
            client.build_request("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}), stream=True
        )
        try:
            lines = first.iter_lines()  # keep it: dropping this iterator would close the response
            next(lines)
            assert plugin.held.wait(30), "the first request never reached the backend"
            with pytest.raises(httpx.ReadTimeout):  # waits in the queue behind the held request, then leaves
                httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
            _wait("the queued request to give up its place", lambda: _metric(url, "phi3_abandoned_requests_total") == 1)
            assert _metric(url, "phi3_queue_depth") == 0
            assert _metric(url, "phi3_active_generations") == 1, "the request ahead is still held in the backend"
            assert plugin.generate_calls == 1, "the leaver must never reach the backend"
        finally:
            hold.set()
            first.close()
    _wait("the held request to finish", lambda: _metric(url, "phi3_active_generations") == 0)
    assert plugin.generate_calls == 1
