"""phi3 serve's network options: key from the environment, CORS, the warning off loopback; model field parsing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from phi3.server.errors import APIError
from phi3.server.model_spec import Defaults, parse

from .harness import ServerProcess

ORIGIN = "http://app.example"


def test_env_key_cors_and_non_loopback_bind(start_server: Any) -> None:
    server: ServerProcess = start_server(
        ["smoke", "-b", "reference", "-p", "fp32", "--host", "0.0.0.0", "--cors-origin", ORIGIN],
        env={"PHI3_API_KEY": "from-env"},
    )
    assert "without an API key" not in server.log()
    assert httpx.get(f"{server.base_url}/models", timeout=30).status_code == 401
    ok = httpx.get(f"{server.base_url}/models", headers={"Authorization": "Bearer from-env"}, timeout=30)
    assert ok.status_code == 200
    preflight = httpx.options(
        f"{server.base_url}/chat/completions",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(f"{server.url}/health", headers={"Origin": "http://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_an_origin(start_server: Any) -> None:
    server: ServerProcess = start_server(["smoke", "-b", "reference", "-p", "fp32"])
    response = httpx.get(f"{server.url}/health", headers={"Origin": ORIGIN}, timeout=30)
    assert "access-control-allow-origin" not in response.headers


def test_binding_off_loopback_without_a_key_warns(run_phi3: Any) -> None:
    done = run_phi3("serve", "no-such-model", "--preload", "--host", "0.0.0.0", timeout=300)
    assert "Warning: serving on 0.0.0.0 without an API key" in done.stderr
    assert done.returncode == 1


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("smoke", ("smoke", "auto", None, "auto")),
        ("smoke@openvino", ("smoke", "openvino", None, "auto")),
        ("smoke@openvino:int8", ("smoke", "openvino", "int8", "auto")),
        ("smoke@openvino::GPU", ("smoke", "openvino", None, "GPU")),
        ("smoke@openvino:int4:AUTO:GPU,CPU", ("smoke", "openvino", "int4", "AUTO:GPU,CPU")),
        ("microsoft/Phi-3-mini-4k-instruct@:fp16", ("microsoft/Phi-3-mini-4k-instruct", "auto", "fp16", "auto")),
    ],
)
def test_model_field_syntax(field: str, expected: tuple[str, str, str | None, str]) -> None:
    spec = parse(field, Defaults())
    assert (spec.model, spec.backend, spec.precision, spec.device) == expected


def test_model_field_keeps_folders_with_at_and_scopes_options(tmp_path: Any) -> None:
    folder = tmp_path / "me@work"
    folder.mkdir()
    assert parse(str(folder), Defaults()).model == str(folder)
    defaults = Defaults(backend="openvino", engine="genai", options=(("ov_config", {}),))
    assert parse("smoke", defaults).options == defaults.options
    assert parse("smoke@openvino", defaults).engine == "genai"
    other = parse("smoke@reference", defaults)
    assert other.options == () and other.engine is None
    with pytest.raises(APIError, match="empty suffix"):
        parse("smoke@", defaults)
    with pytest.raises(APIError, match="names no model"):
        parse("@openvino", defaults)
