"""The chat page at ``/`` in a real Chromium against a real ``phi3 serve smoke`` (issue 25).

Each test gets a fresh browser profile; the servers live for the module. Every wait is bounded
(``WAIT_MS``); nothing sleeps and then asserts on time. Answers are compared at temperature 0.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from playwright.sync_api import BrowserContext, Page, Request, Route
from server.harness import API_KEY, ServerProcess

from .conftest import WAIT_MS

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PWNED = "window.__phi3_pwned"


@pytest.fixture(scope="module")
def server(start_server: Any) -> ServerProcess:
    """The page's everyday server (with a --cors-origin, which must not get in the page's way)."""
    return start_server(["smoke", "--max-loaded", "2", "--cors-origin", "http://example.test"])


@pytest.fixture(scope="module")
def keyed_server(start_server: Any) -> ServerProcess:
    """--api-key, and no queue: a second request while one generates is a 429."""
    return start_server(["smoke", "--max-queue", "0"], api_key=API_KEY)


# ---- driving the page -------------------------------------------------------------------------------


def open_page(page: Page, server: ServerProcess) -> Page:
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 1")
    return page


def settings(page: Page, **values: str) -> None:
    """Fill the Settings panel (opened if closed): temperature, top_p, max_tokens, system."""
    if page.locator("#settings").is_hidden():
        page.click("#toggle-settings")
    fields = {"temperature": "#temperature", "top_p": "#top-p", "max_tokens": "#max-tokens", "system": "#system"}
    for name, value in values.items():
        page.fill(fields[name], value)


def send(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def answers_done(page: Page, count: int) -> None:
    """Wait until the page shows ``count`` finished answers."""
    page.wait_for_function(
        "n => document.querySelectorAll('.message.assistant').length === n"
        " && !document.querySelector('.message.assistant[aria-busy=true]')",
        arg=count,
        timeout=WAIT_MS,
    )


def last_answer(page: Page) -> str:
    return page.locator(".message.assistant .content").last.inner_text()


def last_stats(page: Page) -> str:
    return page.locator(".message.assistant .stats").last.inner_text()


def chat_requests(page: Page) -> list[dict[str, Any]]:
    """Collects the body of every chat request the page sends, from now on."""
    bodies: list[dict[str, Any]] = []

    def seen(request: Request) -> None:
        if request.url.endswith("/v1/chat/completions") and request.method == "POST":
            bodies.append(json.loads(request.post_data or "{}"))

    page.on("request", seen)
    return bodies


def long_answers(page: Page, tokens: int) -> None:
    """Make the page's next answers long: the smoke model's own answers end within ~60 tokens, so its
    chat requests get ``ignore_eos`` and ``max_tokens`` added on their way out (the answer still streams
    to the page from the server as any other)."""

    def extend(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True, "max_tokens": tokens}))

    page.route("**/v1/chat/completions", extend)


def record_growth(page: Page) -> None:
    """Record the text of the streaming answer at every change of the conversation (a MutationObserver)."""
    page.evaluate(
        """() => {
            window.__snapshots = [];
            new MutationObserver(() => {
                const busy = document.querySelector('.message.assistant[aria-busy=true] .content');
                if (busy) window.__snapshots.push(busy.textContent);
            }).observe(document.querySelector('#messages'), {childList: true, subtree: true, characterData: true});
        }"""
    )


def cancelled(server: ServerProcess) -> float:
    return server.metric("phi3_cancelled_generations_total")


# ---- the tests ----------------------------------------------------------------------------------------


def test_page_is_served_with_its_files_and_a_strict_csp(server: ServerProcess) -> None:
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/ui/app.js"' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")):
        asset = httpx.get(f"{server.url}/ui/{name}", timeout=30)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
    assert httpx.get(f"{server.url}/ui/index.html", timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/ui/..%2Fapp.py", timeout=30).status_code == 404


def test_streams_an_answer_in_pieces_with_its_timings(page: Page, server: ServerProcess, screenshots: Path) -> None:
    open_page(page, server)
    bodies = chat_requests(page)
    settings(page, temperature="0")
    long_answers(page, 400)
    record_growth(page)
    send(page, "Hi! Who are you?")
    answers_done(page, 1)
    final = page.evaluate("document.querySelector('.message.assistant .content').textContent")
    snapshots = [text for text in page.evaluate("window.__snapshots") if text.strip()]
    assert len(set(snapshots)) >= 2, f"the answer did not appear in pieces: {snapshots[:5]}"
    assert len(snapshots[0]) < max(len(text) for text in snapshots) <= len(final), "the answer did not grow"
    assert final.startswith(snapshots[0][:8]), (snapshots[0], final)
    assert bodies[0]["stream"] is True and bodies[0]["model"] == "smoke" and bodies[0]["temperature"] == 0
    stats = last_stats(page)
    assert "tokens" in stats and "TTFT" in stats and "tok/s" in stats, stats
    card = next(c for c in server.get("/v1/models").json()["data"] if c["id"] == "smoke")
    assert card["backend"] in stats and card["device"] in stats, (stats, card)
    page.screenshot(path=screenshots / "streamed-answer.png")


def test_enter_sends_and_shift_enter_is_a_new_line(page: Page, server: ServerProcess) -> None:
    open_page(page, server)
    bodies = chat_requests(page)
    settings(page, temperature="0")
    page.click("#prompt")
    page.keyboard.type("Hi!")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Who are you?")
    assert page.input_value("#prompt") == "Hi!\nWho are you?"
    assert not bodies
    page.keyboard.press("Enter")
    answers_done(page, 1)
    assert page.input_value("#prompt") == ""
    assert page.locator(".message.user .content").last.inner_text() == "Hi!\nWho are you?"
    assert bodies[-1]["messages"][-1] == {"role": "user", "content": "Hi!\nWho are you?"}


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_ends_a_long_answer_on_the_server(page: Page, server: ServerProcess, how: str, screenshots: Path) -> None:
    open_page(page, server)
    long_answers(page, 4000)
    before = cancelled(server)
    send(page, "Hi!")
    page.wait_for_function("(document.querySelector('.message.assistant .content')?.textContent || '').length > 20")
    if how == "button":
        page.screenshot(path=screenshots / "streaming-with-stop.png")
        page.click("#stop")
    else:
        page.keyboard.press("Escape")
    answers_done(page, 1)
    assert "stopped" in last_stats(page)
    assert page.locator("#send").is_visible() and page.locator("#stop").is_hidden()
    stopped_at = last_answer(page)
    server.wait_for("the server to cancel the generation", lambda: cancelled(server) > before, timeout=60)
    assert last_answer(page) == stopped_at
    assert len(stopped_at.split()) < 4000


def test_regenerate_replaces_the_last_answer(page: Page, server: ServerProcess) -> None:
    open_page(page, server)
    bodies = chat_requests(page)
    settings(page, temperature="0")
    send(page, "Hi!")
    answers_done(page, 1)
    first = last_answer(page)
    page.click(".message.assistant .regenerate")  # the new answer is pending once the click returns
    answers_done(page, 1)
    assert len(bodies) == 2, "Regenerate did not send the conversation again"
    assert bodies[1]["messages"] == bodies[0]["messages"], "Regenerate must resend the same conversation"
    assert page.locator(".message").count() == 2
    assert last_answer(page) == first, "at temperature 0 the regenerated answer is the same"


def test_new_chat_and_switching_conversations(page: Page, server: ServerProcess) -> None:
    open_page(page, server)
    settings(page, temperature="0")
    send(page, "Hi!")
    answers_done(page, 1)
    page.click("#new-chat")
    assert page.locator(".message").count() == 0 and page.locator("#empty").is_visible()
    assert page.locator("#conversations li").count() == 2
    send(page, "Who are you?")
    answers_done(page, 1)
    assert page.locator(".message.user .content").inner_text() == "Who are you?"
    page.click("#conversations li >> text=Hi!")
    assert page.locator(".message.user .content").inner_text() == "Hi!"


def test_reload_keeps_the_conversation_and_export_has_it(page: Page, server: ServerProcess, tmp_path: Path) -> None:
    open_page(page, server)
    settings(page, temperature="0")
    send(page, "Hi!")
    answers_done(page, 1)
    answer, stats = last_answer(page), last_stats(page)
    page.reload()
    open_page(page, server)
    assert page.locator(".message.user .content").inner_text() == "Hi!"
    assert last_answer(page) == answer and last_stats(page) == stats
    assert page.input_value("#temperature") == "0", "settings are kept too"
    with page.expect_download() as download:
        page.click("#export")
    saved = tmp_path / "export.json"
    download.value.save_as(saved)
    exported = json.loads(saved.read_text())
    (conversation,) = exported["conversations"]
    assert [m["content"] for m in conversation["messages"]] == ["Hi!", answer]


def test_model_switch(page: Page, server: ServerProcess, screenshots: Path) -> None:
    open_page(page, server)
    bodies = chat_requests(page)
    settings(page, temperature="0", max_tokens="24")
    page.select_option("#model", "__custom__")
    page.fill("#custom-model", "smoke@openvino:int8")
    send(page, "Hi!")
    answers_done(page, 1)
    assert bodies[-1]["model"] == "smoke@openvino:int8"
    assert "int8" in last_stats(page), last_stats(page)
    # the variant is loaded now, so the picker lists it with where it runs
    page.wait_for_function("[...document.querySelectorAll('#model option')].some(o => o.value.includes('int8'))")
    page.select_option("#model", "smoke")
    send(page, "Hi!")
    answers_done(page, 2)
    assert bodies[-1]["model"] == "smoke"
    assert "int8" not in last_stats(page)
    page.select_option("#model", "smoke@openvino:int8")
    assert page.locator("#custom-model").is_hidden()
    send(page, "Hi!")
    answers_done(page, 3)
    assert bodies[-1]["model"] == "smoke@openvino:int8"
    page.screenshot(path=screenshots / "model-switch.png")


def test_json_schema_box_gives_valid_json(page: Page, server: ServerProcess, screenshots: Path) -> None:
    open_page(page, server)
    bodies = chat_requests(page)
    settings(page, temperature="0")
    page.check("#use-schema")
    page.fill("#schema", json.dumps(SCHEMA))
    send(page, "Alice, 30, as JSON")
    answers_done(page, 1)
    value = json.loads(page.locator(".message.assistant pre code").last.inner_text())
    jsonschema.validate(value, SCHEMA)
    assert bodies[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }
    page.screenshot(path=screenshots / "json-schema.png")
    # a box that is not JSON is the page's own one-line error, and nothing is sent
    page.fill("#schema", "{not json")
    send(page, "Bob as JSON")
    page.wait_for_selector("#error:has-text('JSON Schema box')")
    assert len(bodies) == 1


def test_model_output_with_script_is_text(page: Page, server: ServerProcess) -> None:
    """Through the server: a schema whose constant is a script tag makes the model write one."""
    open_page(page, server)
    script = f"<script>{PWNED} = 1</script>"
    schema = {
        "type": "object",
        "properties": {"html": {"const": script}, "name": {"type": "string"}},
        "required": ["html", "name"],
        "additionalProperties": False,
    }
    settings(page, temperature="0")
    page.check("#use-schema")
    page.fill("#schema", json.dumps(schema))
    send(page, "Alice as JSON")
    answers_done(page, 1)
    assert json.loads(last_answer(page))["html"] == script
    assert page.locator("#messages script").count() == 0
    assert page.evaluate(f"typeof {PWNED}") == "undefined"


def test_stored_markdown_with_html_is_rendered_as_text(context: BrowserContext, server: ServerProcess) -> None:
    """The Markdown renderer: a stored answer full of HTML and a javascript: link, put in local storage
    before the page loads, shows as text; its Markdown (code block, bold, list, http link) as elements."""
    answer = (
        "Here is **bold <b>text</b>** and `<i>code</i>`.\n\n"
        "<script>window.__phi3_pwned = 2</script>\n"
        '<img src="/nonexistent" onerror="window.__phi3_pwned = 3">\n\n'
        "- [a link](https://example.com/)\n- [bad link](javascript:window.__phi3_pwned=4)\n\n"
        "```html\n<script>window.__phi3_pwned = 5</script>\n```"
    )
    stored = {
        "conversations": [
            {
                "id": "c1",
                "title": "html",
                "created": 1,
                "updated": 1,
                "messages": [{"role": "user", "content": "<b>hi</b>"}, {"role": "assistant", "content": answer}],
            }
        ],
        "current": "c1",
    }
    context.add_init_script(f"localStorage.setItem('phi3.chat.v1', {json.dumps(json.dumps(stored))})")
    page = context.new_page()
    open_page(page, server)
    messages = page.locator("#messages")
    assert messages.locator("script, img, b, i").count() == 0
    assert page.evaluate(f"typeof {PWNED}") == "undefined"
    text = messages.inner_text()
    assert "<script>window.__phi3_pwned = 2</script>" in text and "<b>hi</b>" in text
    assert messages.locator(".assistant pre code").inner_text() == "<script>window.__phi3_pwned = 5</script>"
    assert messages.locator(".assistant strong").inner_text() == "bold <b>text</b>"
    assert messages.locator(".assistant code").first.inner_text() == "<i>code</i>"
    links = messages.locator(".assistant a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.com/"
    assert "[bad link](javascript:" in text


def test_api_key_is_asked_for_and_kept_in_the_tab_only(
    page: Page, keyed_server: ServerProcess, screenshots: Path
) -> None:
    page.goto(keyed_server.url + "/")
    page.wait_for_selector("#key-form:visible")
    assert "API key" in page.inner_text("#error")
    page.screenshot(path=screenshots / "api-key.png")
    page.fill("#api-key", "wrong-key")
    page.press("#api-key", "Enter")
    page.wait_for_selector("#key-reason:has-text('refused')")
    page.fill("#api-key", API_KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_function("document.querySelector('#model').options.length > 1")
    assert page.locator("#key-form").is_hidden() and page.locator("#error").is_hidden()
    settings(page, temperature="0")
    send(page, "Hi!")
    answers_done(page, 1)
    assert last_answer(page).strip() and "tok/s" in last_stats(page)
    assert page.evaluate("sessionStorage.getItem('phi3.chat.apiKey')") == API_KEY
    local = page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert API_KEY not in local, "the API key must never reach local storage"
    other_tab = page.context.browser.new_context(bypass_csp=True).new_page()  # type: ignore[union-attr]
    try:
        other_tab.goto(keyed_server.url + "/")
        other_tab.wait_for_selector("#key-form:visible", timeout=WAIT_MS)
    finally:
        other_tab.context.close()


@pytest.fixture
def busy(keyed_server: ServerProcess) -> Iterator[None]:
    """A long generation holding the keyed server's only slot (its queue is 0) while the test runs."""
    done = threading.Event()

    def generate() -> None:
        body = {
            "model": "smoke",
            "messages": [{"role": "user", "content": "Hi!"}],
            "stream": True,
            "ignore_eos": True,
            "max_tokens": 4000,
        }
        with httpx.stream(
            "POST", keyed_server.base_url + "/chat/completions", json=body, headers=keyed_server.headers, timeout=120
        ) as response:
            for _ in response.iter_lines():
                if done.is_set():
                    return

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    keyed_server.wait_for("the long generation to start", lambda: keyed_server.metric("phi3_active_generations") >= 1)
    try:
        yield
    finally:
        done.set()
        thread.join(120)


def test_a_busy_server_is_said_so(page: Page, keyed_server: ServerProcess, busy: None) -> None:
    page.goto(keyed_server.url + "/")
    page.evaluate(f"sessionStorage.setItem('phi3.chat.apiKey', {json.dumps(API_KEY)})")
    open_page(page, keyed_server)
    send(page, "Hi!")
    answers_done(page, 1)
    error = page.locator(".message-error").inner_text()
    assert error.startswith("The server is busy (HTTP 429)") and "--max-queue" in error, error


def test_phone_width(context: BrowserContext, server: ServerProcess, screenshots: Path) -> None:
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    open_page(page, server)
    settings(page, temperature="0")
    page.click("#toggle-settings")
    send(page, "Hi! Who are you?")
    answers_done(page, 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways at 390 px"
    for selector in ("#prompt", "#send", "#model", "#toggle-sidebar"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    assert page.locator("#sidebar").bounding_box()["x"] < 0  # type: ignore[index]
    page.click("#toggle-sidebar")
    page.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().x >= 0")
    page.screenshot(path=screenshots / "phone-drawer.png")
    page.keyboard.press("Escape")  # closes the drawer
    page.wait_for_function("document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
    page.screenshot(path=screenshots / "phone.png")
