"""A request waiting in the queue whose client leaves gives up its place while it waits.

The request ahead is held inside the backend (``declaring_backend``'s ``hold``) for as long as the
test needs, so "noticed while waiting, not when its turn comes" is checked on any machine speed:
the leaver is counted as abandoned while the request ahead is still decoding, and it never reaches
the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import in_process_server
from .harness import metric, wait_until

MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]


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
    body = {"model": "smoke", "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
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
            wait_until(
                "the queued request to give up its place",
                lambda: metric(url, "phi3_abandoned_requests_total") == 1,
                10.0,
            )
            assert metric(url, "phi3_queue_depth") == 0
            assert metric(url, "phi3_active_generations") == 1, "the request ahead is still held in the backend"
            assert plugin.generate_calls == 1, "the leaver must never reach the backend"
        finally:
            hold.set()
            first.close()
    wait_until("the held request to finish", lambda: metric(url, "phi3_active_generations") == 0, 10.0)
    assert plugin.generate_calls == 1
