"""The web page at `/`, driven in headless Chromium: upload a clip, record from a (fake) microphone, see answers.

Needs Debian's `chromium` and the Python `playwright` package (no browser download: Playwright drives the system
Chromium). Set SPEECHLLM_UPDATE_SCREENSHOT=1 to refresh docs/web.png.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

from speechllm.serving import ServerConfig, create_app
from speechllm.testing import tiny_model
from tests.test_serving import running_server, wav_bytes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run",
        # a fake microphone (a beep) that needs no permission prompt
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web.png"

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="needs the playwright Python package (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip("needs Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


def wait_until(page, expression: str, timeout: float = 30_000) -> None:
    """Poll a JavaScript expression until it is true (page.wait_for_function evaluates its string inside the page,
    which the server's Content-Security-Policy forbids; evaluate() comes from outside)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout / 1000:g} s: {expression}"
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:  # one Playwright per process: its sync API cannot nest
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    app = create_app(tiny_model(), ServerConfig(model_name="tiny-random", default_max_tokens=12))
    with running_server(app) as url:
        page = browser.new_page(viewport={"width": 820, "height": 700})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the page must work under the server's Content-Security-Policy: a blocked script or style is logged, not thrown
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        page.goto(url + "/")
        page.wait_for_selector("#fields input[type=checkbox]")
        page.errors = errors
        yield page
        page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_upload_choose_fields_and_see_metadata_with_confidences(page, tmp_path):
    assert page.locator("#fields input[type=checkbox]").count() == 6  # one per field of the schema
    clip = tmp_path / "speech.wav"
    clip.write_bytes(wav_bytes(1.5))
    page.set_input_files("#file", str(clip))
    page.uncheck("#fields input[value=Transcript]")
    page.click("#analyze")
    page.wait_for_selector("#meta tbody tr", timeout=60_000)
    rows = page.locator("#meta tbody tr")
    assert rows.count() == 5
    assert "%" in rows.first.inner_text()  # a confidence for each label
    assert page.locator("#meta .bar").first.evaluate("bar => bar.getBoundingClientRect().width") > 0  # drawn
    assert '"confidences"' in page.locator("#raw").text_content()
    page.click("#transcribe")
    wait_until(page, "document.getElementById('transcript').textContent.length > 0", timeout=60_000)
    page.click("#analyze")  # the table again, beside the transcript, for the screenshot
    wait_until(page, "!document.getElementById('analyze').disabled"
                     " && document.querySelectorAll('#meta tbody tr').length == 5")
    page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
    if os.environ.get("SPEECHLLM_UPDATE_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOT), full_page=True)


def test_instruction_asks_the_chat_endpoint(page):
    page.fill("#instruction", "What is said?")
    page.click("#analyze")
    page.wait_for_selector("#answer-box:not([hidden])", timeout=60_000)
    assert '"chat.completion"' in page.locator("#raw").text_content()
    page.fill("#instruction", "")


def test_microphone_recording_is_sent_as_wav(page):
    page.click("#record")
    page.wait_for_timeout(1200)
    page.click("#record")
    wait_until(page, "document.getElementById('clip-info').textContent.startsWith('recording.wav')")
    page.click("#transcribe")
    wait_until(page, "document.getElementById('status').textContent.startsWith('done')"
                     " || !document.getElementById('error').hidden", timeout=60_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()


def test_unsupported_upload_shows_the_servers_message(page, tmp_path):
    webm = tmp_path / "voice.webm"
    webm.write_bytes(b"\x1aE\xdf\xa3" + bytes(200))
    page.set_input_files("#file", str(webm))
    page.click("#transcribe")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not supported" in page.locator("#error").text_content()


def test_a_server_of_several_models_offers_a_picker_that_routes_requests(browser, tmp_path):
    models = {"alpha": tiny_model(), "beta": tiny_model(seed=1, metadata_schema={"fields": ["Gender", "Accent"]})}
    app = create_app(models, ServerConfig(default_max_tokens=6))
    with running_server(app) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the page must work under the server's Content-Security-Policy: a blocked script or style is logged, not thrown
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        page.goto(url + "/")
        page.wait_for_selector("#fields input[type=checkbox]")
        assert page.locator("#model-pick").is_visible()
        assert page.locator("#fields input[type=checkbox]").count() == 6  # alpha, the first model
        page.select_option("#model-pick", "beta")
        wait_until(page, "document.querySelectorAll('#fields input[type=checkbox]').length == 2")
        clip = tmp_path / "speech.wav"
        clip.write_bytes(wav_bytes(1.0))
        page.set_input_files("#file", str(clip))
        page.click("#analyze")
        page.wait_for_selector("#meta tbody tr", timeout=60_000)
        assert '"model": "beta"' in page.locator("#raw").text_content()
        page.click("#transcribe")  # the form names beta too (an unknown id would show a 404 here)
        wait_until(page, "document.getElementById('status').textContent.startsWith('done')"
                         " || !document.getElementById('error').hidden", timeout=60_000)
        assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
        page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_no_speech_shows_no_speaker_and_no_confidence_bars(browser, tmp_path):
    from speechllm.testing import fixed_heads

    model = tiny_model()
    model.attribute_heads = fixed_heads(model.metadata_schema, {"SpeechActivity": False, "Gender": "Male"})
    with running_server(create_app(model, ServerConfig(model_name="deaf"))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#fields input[type=checkbox]")
        clip = tmp_path / "noise.wav"
        clip.write_bytes(wav_bytes(1.0))
        page.set_input_files("#file", str(clip))
        page.click("#analyze")
        page.wait_for_selector("#meta tbody tr", timeout=60_000)
        cells = {row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
                 for row in page.locator("#meta tbody tr").all()}
        assert cells["SpeechActivity"] == "false"
        assert cells["Gender"] == cells["Accent"] == "no speaker"  # not "Male 99.9 %"
        assert "%" not in page.locator("#meta tbody tr", has_text="Gender").inner_text()
        assert page.locator("#transcript").inner_text() == "(no speech)"
        page.close()
