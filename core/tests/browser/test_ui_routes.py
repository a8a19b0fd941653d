"""The chat page's routes and the guard's same-origin rule, in process (no browser, no model load)."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient

from phi3.server.app import ServerSettings, create_app
from phi3.server.command import serve


def client(base_url: str = "http://127.0.0.1:8000", **settings: Any) -> TestClient:
    return TestClient(create_app(ServerSettings(models=("smoke",), **settings)), base_url=base_url)


def test_the_page_is_served_unless_no_ui() -> None:
    with client() as on:
        page = on.get("/")
        assert page.status_code == 200 and "<title>phi3 chat</title>" in page.text
        assert on.head("/").status_code == 200
    with client(ui=False) as off:
        for path in ("/", "/ui/app.js"):
            missing = off.get(path)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", path
        assert off.get("/v1/models").status_code == 200


def test_serve_has_a_no_ui_option() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0 and "--no-ui" in result.output


def origin_status(on: TestClient, origin: str, host: str | None = None) -> int:
    headers = {"Origin": origin, **({"Host": host} if host else {})}
    return on.get("/v1/models", headers=headers).status_code


def test_a_page_served_from_a_lan_address_may_call_that_address() -> None:
    """phi3 serve --host 0.0.0.0: the page at http://10.1.2.3:8000/ calls the API with that Origin."""
    with client("http://10.1.2.3:8000", allowed_hosts=("phi3.lan",)) as on:
        assert origin_status(on, "http://10.1.2.3:8000") == 200
        assert origin_status(on, "http://10.1.2.4:8000") == 403, "another address's page is another origin"
        assert origin_status(on, "http://10.1.2.3:9000") == 403, "another port is another origin"
        assert origin_status(on, "http://phi3.lan:8000", host="phi3.lan:8000") == 200
        assert origin_status(on, "http://evil.example", host="phi3.lan:8000") == 403


def test_same_origin_never_lets_a_rebinding_page_in() -> None:
    """--allowed-host '*' accepts any Host, but a page on such a name is not let in by its own Origin."""
    with client("http://10.1.2.3:8000", allowed_hosts=("*",)) as on:
        assert origin_status(on, "http://evil.example:8000", host="evil.example:8000") == 403
