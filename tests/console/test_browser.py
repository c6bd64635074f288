"""The console in a real browser (Debian's chromium + chromedriver through Selenium), against a
real server: log in, watch a simulated call live, open its detail and play its recording,
upload a KB document and get an answer from it without a restart, answer a declined question
from Insights, and a viewer refused the KB page, the answer form and the recording.

The call runs the real session machinery with scripted speech engines; the knowledge base and
the LLM are the real default models, so "try a question" answers from the uploaded document.
Set APPLIANCE_SCREENSHOTS_DIR to keep the page screenshots (the README's come from here).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from appliance.config import Settings
from appliance.console.queries import DECLINED_PREFIX
from appliance.store.metrics import TurnMetrics
from appliance.store.postgres import call_store
from appliance.store.reader import call_log_reader
from appliance.wiring import load_llm
from tests.conftest import make_settings
from tests.console.helpers import ADMIN, PASSWORD, VIEWER, console_server
from tests.web.fake_engines import FakeSet
from tests.web.twilio_client import SILENCE, greeted_call, tone

# The recording the call page's <audio> element points at, fetched by the page itself (with its
# session cookie): status, content type and the file's first four bytes.
FETCH_RECORDING = """
const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(r => r.arrayBuffer().then(body => done({
  status: r.status, type: r.headers.get("content-type"),
  magic: String.fromCharCode(...new Uint8Array(body.slice(0, 4)))})));
"""
# The browser's own decoder on it: the length it finds, -1 if it cannot play it.
AUDIO_SECONDS = """
const done = arguments[arguments.length - 1];
const audio = document.getElementById("recording");
if (audio.readyState >= 1) { done(audio.duration); return; }
audio.addEventListener("loadedmetadata", () => done(audio.duration));
audio.addEventListener("error", () => done(-1));
audio.load();
"""
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                       reason="needs Debian's chromium and chromium-driver (.ci/run installs)"),
]
FACT_FILE = "parking.md"
FACT = "# Parking\n\nThe parking garage entry code is 4417. The garage is under the building.\n"
DECLINE = f"{DECLINED_PREFIX}. I can take a message if you like."
UNANSWERED = [  # (phrasing, hours ago) as callers asked them over the last days
    ("Do you sell gift cards?", 2), ("can I buy a gift card from you", 30),
    ("do you sell gift vouchers", 50), ("Is there wheelchair access?", 5),
    ("can I get in with a wheelchair", 70), ("Do you offer payment plans?", 26),
]


def seed_declines(settings: Settings) -> None:
    """Calls whose questions the knowledge base could not answer, written as a call writes."""
    async def write() -> None:
        store = call_store(settings)
        await store.open()
        for n, (question, hours) in enumerate(UNANSWERED):
            sid, started = f"CAdeclined{n}", time.time() - hours * 3600
            await store.call_started(sid, mode="media-streams", from_number=f"+1555010{n:04d}")
            await store.add_turn(sid, idx=1, role="user", text=question, started=started + 5)
            await store.add_assistant_turn(sid, idx=1, text=DECLINE, heard_text=DECLINE,
                                           started=started + 6, interrupted=False, kb_chunks=[],
                                           metrics=TurnMetrics(v2v_s=0.7 + n / 10))
            await store.call_ended(sid, status="completed", reason="stop received")
        log = call_log_reader(settings)
        await log.open()
        for n, (_, hours) in enumerate(UNANSWERED):
            started = time.time() - hours * 3600
            await log.transaction([("UPDATE calls SET started = ?, ended = ? WHERE call_sid = ?",
                                    [started, started + 75, f"CAdeclined{n}"])])
        await log.close()
        await store.close()
    asyncio.run(write())


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM and CHROMEDRIVER
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class HeldCall:
    """A simulated call in its own thread: greeted, one question answered, held open."""

    def __init__(self, base: str, settings: Settings) -> None:
        self.call_sid = ""
        self.answered = threading.Event()
        self._hang_up = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(base, settings),),
                                        daemon=True)
        self._thread.start()

    async def _run(self, base: str, settings: Settings) -> None:
        self.call_sid, stream = await greeted_call(base, settings)
        await stream.send_audio(SILENCE * 10 + tone(1.0) + SILENCE * 40)
        await stream.wait_for(lambda: len(stream.events("mark")) >= 3, timeout=60)
        await stream.ack_marks()
        self.answered.set()
        while not self._hang_up.is_set():
            await asyncio.sleep(0.05)
        await stream.stop()

    def end(self) -> None:
        self._hang_up.set()
        self._thread.join(timeout=30)


def shot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    driver.save_screenshot(str(folder / f"{name}.png"))


def log_in(driver: webdriver.Chrome, base: str, username: str) -> None:
    driver.get(f"{base}/console/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()


def test_console_in_a_real_browser(browser: webdriver.Chrome, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, recordings=True)
    shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    settings = msgspec.structs.replace(settings, kb_dir=str(tmp_path / "kb"))  # answers go here
    wait = WebDriverWait(browser, 60)
    fakes = FakeSet(llm=load_llm(settings, instances=1))  # type: ignore[arg-type]
    with console_server(settings, fakes) as base:
        log_in(browser, base, ADMIN)
        wait.until(ec.presence_of_element_located((By.ID, "calls")))
        shot(browser, shots, "login-then-calls-empty")

        browser.get(f"{base}/console/live")  # open before the call: what follows is pushed
        wait.until(ec.presence_of_element_located((By.ID, "no-calls")))
        call = HeldCall(base, settings)
        assert call.answered.wait(90), "the simulated call was not answered"
        wait.until(ec.text_to_be_present_in_element((By.ID, "live"),
                                                    "What time do you open tomorrow?"))
        assert call.call_sid in (browser.find_element(
            By.CSS_SELECTOR, ".live-call").get_attribute("data-sid") or "")
        shot(browser, shots, "live")
        call.end()
        wait.until(ec.presence_of_element_located((By.ID, "no-calls")))

        browser.get(f"{base}/console/calls")
        wait.until(ec.presence_of_element_located((By.CLASS_NAME, "call-link"))).click()
        transcript = wait.until(ec.presence_of_element_located((By.ID, "transcript"))).text
        assert "What time do you open tomorrow?" in transcript
        assert call.call_sid in browser.page_source
        recording = browser.find_element(By.ID, "recording").get_attribute("src")
        assert browser.execute_async_script(FETCH_RECORDING, recording) == {
            "status": 200, "type": "audio/flac", "magic": "fLaC"}
        assert browser.execute_async_script(AUDIO_SECONDS) > 1.0
        shot(browser, shots, "call-detail")
        browser.get(f"{base}/console/calls")
        shot(browser, shots, "calls")

        document = tmp_path / FACT_FILE
        document.write_text(FACT)
        browser.get(f"{base}/console/kb")
        browser.find_element(By.ID, "file").send_keys(str(document))
        browser.find_element(By.ID, "upload").click()
        flash = wait.until(ec.presence_of_element_located((By.ID, "flash"))).text
        assert "1 added" in flash, flash
        assert FACT_FILE in browser.find_element(By.ID, "documents").text
        browser.find_element(By.ID, "question").send_keys(
            "What is the parking garage entry code?")
        browser.find_element(By.ID, "ask").click()
        answer = wait.until(ec.presence_of_element_located((By.ID, "answer-text")))
        assert "4417" in answer.text
        assert f"source: {FACT_FILE}" in browser.find_element(By.ID, "answer").text
        shot(browser, shots, "knowledge-base")

        browser.get(f"{base}/console/system")
        assert "********" in browser.find_element(By.ID, "settings").text
        shot(browser, shots, "system")
        seed_declines(settings)
        browser.get(f"{base}/console/insights")
        groups = browser.find_elements(By.CSS_SELECTOR, ".unanswered")
        assert [g.find_element(By.TAG_NAME, "h3").text for g in groups][:2] == [
            "Do you sell gift cards?", "Is there wheelchair access?"]
        shot(browser, shots, "insights")
        groups[0].find_element(By.NAME, "answer").send_keys(
            "Yes: gift cards from 20 dollars, at the front desk.")
        groups[0].find_element(By.TAG_NAME, "button").click()
        flash = wait.until(ec.presence_of_element_located((By.ID, "flash"))).text
        assert "answers/do-you-sell-gift-cards.md" in flash, flash

        browser.get(f"{base}/console/audit")
        assert "kb.upload" in browser.find_element(By.ID, "audit").text
        assert "kb.answer" in browser.find_element(By.ID, "audit").text

        browser.find_element(By.ID, "logout").click()
        wait.until(ec.presence_of_element_located((By.ID, "username")))
        log_in(browser, base, VIEWER)
        wait.until(ec.presence_of_element_located((By.ID, "calls")))
        browser.get(f"{base}/console/kb")
        assert browser.find_element(By.ID, "error-status").text == "403"
        assert "Knowledge base" not in browser.find_element(By.TAG_NAME, "nav").text
        browser.find_element(By.LINK_TEXT, "Insights").click()
        wait.until(ec.presence_of_element_located((By.CLASS_NAME, "unanswered")))
        assert not browser.find_elements(By.CLASS_NAME, "answer-form")
        browser.get(f"{base}/console/calls/{call.call_sid}")
        wait.until(ec.presence_of_element_located((By.ID, "transcript")))
        assert not browser.find_elements(By.ID, "recording")
        assert browser.execute_async_script(FETCH_RECORDING, recording)["status"] == 403
