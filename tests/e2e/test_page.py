"""The page at `/` in Debian's headless Chromium (driven by Playwright), against the real stack: the
adapter process in front of the real predictor (random weights). It must stream through the WebSocket
into Web Audio, report its figures, offer a decodable WAV, and show a refused token. The screenshot
is saved to build/test-artifacts/page.png."""

from __future__ import annotations

import base64
import io

import pytest
import requests
import soundfile as sf
from playwright.sync_api import Page, sync_playwright

from scripts.processes import ROOT
from tests.support.browser_harness import chromium_path
from tests.support.servers import start_adapter

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "build" / "test-artifacts"
TOKEN = "page-test-token"
PHONE = {"width": 390, "height": 844}
SPEAK_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def adapter(predictor, voices_dir, tmp_path_factory):
    server = start_adapter(predictor.http_url, voices_dir, tmp_path_factory.mktemp("page-logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded_adapter(predictor, voices_dir, tmp_path_factory):
    server = start_adapter(predictor.http_url, voices_dir, tmp_path_factory.mktemp("page-token-logs"), API_TOKEN=TOKEN)
    yield server
    server.stop()


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport=PHONE)  # a phone's screen
            tab.errors = []
            tab.on("pageerror", lambda error: tab.errors.append(str(error)))
            yield tab
        finally:
            browser.close()


def wait_state(page: Page, *states: str, timeout: float = 30_000) -> str:
    page.wait_for_function(
        "states => window.chatterbox && states.includes(window.chatterbox.state)", arg=list(states), timeout=timeout
    )
    return page.evaluate("window.chatterbox.state")


def fetch_bytes(page: Page, url: str) -> bytes:
    """The bytes behind a URL as the page sees it (a blob: URL only exists inside the page)."""
    encoded = page.evaluate(
        """async (url) => {
            const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(text);
        }""",
        url,
    )
    return base64.b64decode(encoded)


def test_speak_streams_into_web_audio_and_offers_a_wav(adapter, page, capsys):
    page.goto(f"{adapter.url}/")
    assert wait_state(page, "ready", "token") == "ready"
    # The controls come from the service: its loaded models, its voices, its parameter table.
    loaded = requests.get(f"{adapter.url}/health").json()["loaded_models"]
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == loaded
    assert "alice.wav" in page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")
    temperature = page.locator("#param-temperature")
    assert (temperature.get_attribute("min"), temperature.get_attribute("max")) == ("0.1", "1.5")
    assert page.get_by_label("Language").is_hidden()
    if "multilingual" in loaded:  # the suite's predictor loads all three
        page.select_option("#model", "multilingual")
        assert page.get_by_label("Language").is_visible() and page.input_value("#language") == "en"
        assert page.locator("#tags").is_hidden()  # its tokenizer has no tags
    page.select_option("#model", "turbo")

    # Turbo's tags, as its tokenizer lists them, are buttons that insert the tag at the cursor.
    tags = requests.get(f"{adapter.url}/api/parameters").json()["tags"]["turbo"]
    assert page.eval_on_selector_all("#tags button", "bs => bs.map(b => b.textContent)") == tags and tags
    page.get_by_label("Text").fill("Hello from the browser.")
    page.eval_on_selector("#text", "text => text.setSelectionRange(5, 5)")
    page.get_by_role("button", name="[sigh]").click()
    assert page.input_value("#text") == "Hello [sigh] from the browser."
    page.select_option("#voice", "alice.wav")
    page.get_by_role("button", name="Speak").click()
    assert wait_state(page, "done", "error", timeout=SPEAK_TIMEOUT_MS) == "done", page.text_content("#error")

    last = page.evaluate("window.chatterbox.last")
    assert last["error"] is None and not page.errors, (last, page.errors)
    # Every chunk received went to Web Audio, back to back: the scheduled audio is the whole result.
    assert last["scheduledChunks"] >= 2
    assert abs(last["scheduledSeconds"] - last["durationSeconds"]) < 0.01
    assert last["ttfaMs"] > 0 and last["realTimeFactor"] > 0
    assert page.text_content("#stat-ttfa") == f"{last['ttfaMs']} ms"
    assert page.text_content("#stat-duration") == f"{last['durationSeconds']:.2f} s"

    link = page.get_by_role("link", name="Download WAV")
    assert link.is_visible() and link.get_attribute("download").endswith(".wav")
    audio, rate = sf.read(io.BytesIO(fetch_bytes(page, link.get_attribute("href"))), dtype="int16")
    assert rate == 24000 and len(audio) == round(last["durationSeconds"] * 24000) and audio.any()

    page.click("#parameters-panel summary")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    with capsys.disabled():
        print(f"\nPage screenshot: {screenshot}")


def test_a_wrong_token_is_shown_in_the_page(guarded_adapter, page):
    page.goto(f"{guarded_adapter.url}/")
    assert wait_state(page, "ready", "token") == "token"
    assert page.get_by_label("Token").is_visible() and page.locator("#speak-form").is_hidden()

    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Use token").click()
    page.wait_for_function("document.getElementById('error').textContent.includes('refused')")
    error = page.get_by_role("alert")
    assert error.is_visible() and "missing or invalid API token" in error.text_content()
    assert page.locator("#speak-form").is_hidden()

    # The right token opens the page, and is sent on the WebSocket too.
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    # The state is still "token" right after the click; only "ready" will do (a timeout fails the test).
    assert wait_state(page, "ready") == "ready" and page.get_by_role("alert").is_hidden()
    page.get_by_label("Text").fill("Authorised.")
    page.get_by_role("button", name="Speak").click()
    assert wait_state(page, "done", "error", timeout=SPEAK_TIMEOUT_MS) == "done", page.text_content("#error")
