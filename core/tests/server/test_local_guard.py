"""Nobody else drives a local ``phi3 serve``: web pages, DNS rebinding, and clients naming server files.

Each attack is sent as a browser or an attacker would (raw httpx), against a real server on the
default loopback bind, and must be refused before any work (no generation starts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import phi3
from phi3.testing.tiny_model import make_tiny_phi3

from .harness import ServerProcess

MESSAGES = [{"role": "user", "content": "Tell me about AI PCs."}]
BODY = {"model": "smoke", "messages": MESSAGES, "max_tokens": 2, "temperature": 0}
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    return start_server(["smoke", "-b", "reference", "-p", "fp32", "--allowed-host", "phi3.lan"])  # type: ignore[no-any-return]


def generated(server: ServerProcess) -> float:
    return server.metric("phi3_generated_tokens_total")


def test_a_cross_site_simple_request_is_refused_before_any_work(server: ServerProcess) -> None:
    before = generated(server)
    text = json.dumps(BODY)
    # what a page's fetch() may send without a preflight: text/plain, with the page's Origin
    page = httpx.post(
        f"{server.base_url}/chat/completions",
        content=text,
        headers={"Content-Type": "text/plain", "Origin": EVIL},
        timeout=30,
    )
    assert page.status_code == 403 and page.json()["error"]["code"] == "origin_not_allowed"
    assert "--cors-origin http://evil.example" in page.json()["error"]["message"]
    # the same from a form or a page that hides its Origin: still not JSON, so no body is read
    plain = httpx.post(f"{server.base_url}/chat/completions", content=text, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and "Content-Type: application/json" in plain.json()["error"]["message"]
    assert httpx.post(f"{server.base_url}/completions", content=text).status_code == 415  # no Content-Type at all
    assert generated(server) == before, "a refused request must never reach the model"
    ok = httpx.post(f"{server.base_url}/chat/completions", json=BODY, timeout=120)
    assert ok.status_code == 200, ok.text  # a JSON request without an Origin (curl, SDKs) is served


@pytest.mark.parametrize("path", ["/health", "/metrics", "/v1/models", "/v1/chat/completions"])
def test_dns_rebinding_hosts_are_refused_on_every_route(server: ServerProcess, path: str) -> None:
    """A rebinding page reaches 127.0.0.1 under its own domain: the Host header gives it away."""
    response = httpx.request(
        "POST" if "chat" in path else "GET",
        f"{server.url}{path}",
        headers={"Host": "evil.example:8000"},
        json=BODY if "chat" in path else None,
        timeout=30,
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "host_not_allowed"


def test_loopback_names_addresses_and_allowed_hosts_are_served(server: ServerProcess) -> None:
    port = server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "phi3.lan", f"app.localhost:{port}"):
        assert httpx.get(f"{server.url}/health", headers={"Host": host}, timeout=30).status_code == 200, host
    for origin in (f"http://localhost:{port}", "http://127.0.0.1:3000"):
        assert httpx.get(f"{server.url}/health", headers={"Origin": origin}, timeout=30).status_code == 200


@pytest.fixture(scope="module")
def open_server(start_server: Any) -> ServerProcess:
    """No MODEL arguments: any catalogue alias and PHI3_HOME's models, nothing else."""
    return start_server(["-b", "reference", "-p", "fp32"])  # type: ignore[no-any-return]


def test_without_model_arguments_server_paths_are_not_loadable_nor_revealed(
    open_server: ServerProcess, tmp_path: Path
) -> None:
    existing = make_tiny_phi3(tmp_path / "private-model")
    answers = []
    for model in (str(existing), str(tmp_path / "does-not-exist"), "/etc", "someone/some-hub-repo"):
        response = httpx.post(f"{open_server.base_url}/chat/completions", json={**BODY, "model": model}, timeout=60)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and "--allow-any-model" in error["message"]
        answers.append(error["message"].replace(repr(model), "MODEL"))
    assert len(set(answers)) == 1, "the refusal must not depend on whether the path exists"
    assert httpx.get(f"{open_server.url}/health", timeout=30).json()["loaded"] == []


def test_models_already_in_phi3_home_are_served_and_their_paths_never_listed(
    open_server: ServerProcess, tmp_path: Path
) -> None:
    folder = str(make_tiny_phi3(tmp_path / "quantized-before"))
    phi3.load(folder, backend="reference", precision="fp32").close()  # now in PHI3_HOME (the server's too)
    response = httpx.post(f"{open_server.base_url}/chat/completions", json={**BODY, "model": folder}, timeout=120)
    assert response.status_code == 200, response.text
    listed = httpx.get(f"{open_server.base_url}/models", timeout=30).json()["data"]
    assert all(folder not in card["id"] for card in listed)
    assert all(folder not in card["id"] for card in httpx.get(f"{open_server.url}/health", timeout=30).json()["loaded"])


def test_allow_any_model_loads_a_client_named_folder(start_server: Any, tmp_path: Path) -> None:
    folder = str(make_tiny_phi3(tmp_path / "any"))
    server = start_server(["-b", "reference", "-p", "fp32", "--allow-any-model"])
    response = httpx.post(f"{server.base_url}/chat/completions", json={**BODY, "model": folder}, timeout=120)
    assert response.status_code == 200, response.text
    assert all(folder not in card["id"] for card in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"])
