"""Fixtures for the chat page's tests: a real ``phi3 serve`` (the server tests' harness) and Debian's
Chromium driven by playwright (``nox -s browser`` installs both).

Outside that session (``tests(package='core')``, without playwright) these tests are skipped with the
reason shown by ``-ra``; inside it a missing browser is a failure naming the fix, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the chat page tests need phi3-core[serve] (nox -s browser)")
pytest.importorskip("playwright", reason="the chat page tests drive Chromium with playwright (nox -s browser)")

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from server.harness import ServerProcess, assert_clean_exit

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 120_000
"""Bound of every wait on the page (the first answer of a model variant builds its artifact)."""


def chromium_path() -> str:
    """The Chromium to drive: PHI3_CHROMIUM, else chromium on PATH (Debian's package)."""
    for candidate in (os.environ.get("PHI3_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(
        "no Chromium found for the chat page tests: run them with `python -m nox -s browser` (which installs "
        "Debian's chromium when root) or install it (apt-get install chromium) or set PHI3_CHROMIUM=/path/to/chromium",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests write screenshots of the page's main states: PHI3_BROWSER_ARTIFACTS (the nox
    session's, kept after it), else pytest's tmp."""
    given = os.environ.get("PHI3_BROWSER_ARTIFACTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"chat page screenshots: {folder}")
    return folder


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test (empty local and session storage). ``bypass_csp``: the page's
    Content-Security-Policy forbids the eval playwright's waits use; it also means a renderer that let
    model text become HTML would really run it here, so the tests see the renderer, not the CSP."""
    created = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    created.set_default_timeout(WAIT_MS)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, phi3_home: Path) -> Iterator[Any]:
    """``start_server(args, api_key=None)``: a real ``phi3 serve`` on a free loopback port; every server
    is Ctrl-C'd at module end and must exit cleanly."""
    started: list[ServerProcess] = []

    def start(args: list[str], api_key: str | None = None) -> ServerProcess:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        server = ServerProcess([*args, "--api-key", api_key] if api_key else args, log, api_key)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    failures: list[str] = []
    for server in started:
        try:
            assert_clean_exit(server)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)
