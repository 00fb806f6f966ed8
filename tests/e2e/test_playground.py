"""The playground in a real browser: Debian's chromium driven headless by Selenium (through
chromium-driver) against a real ``quantserve serve`` process behind an API key."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from server.runtime.model_store import DEFAULT_MODEL_ID
from tests.e2e.conftest import Server

KEY = "sk-play"
SHOTS = Path(os.environ.get("QUANTSERVE_SCREENSHOTS", "/tmp"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(["--api-key", KEY], tmp_path_factory.mktemp("play") / "server.log")
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def open_page(browser: WebDriver, served: Server, key: str = KEY) -> WebDriverWait[WebDriver]:
    browser.get(served.base_url + "/")
    wait = WebDriverWait(browser, 60)
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.ID, "reload-models").click()
    return wait


def ask(browser: WebDriver, text: str, *, temperature: str = "0", max_tokens: str = "64") -> None:
    for field, value in (("temperature", temperature), ("max-tokens", max_tokens)):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "prompt").send_keys(text)
    browser.find_element(By.ID, "send").click()


def answers(browser: WebDriver) -> list[str]:
    return [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")]


def test_the_page_is_served_without_a_key(served: Server) -> None:
    page = httpx.get(served.base_url + "/")
    assert page.status_code == 200 and 'id="model"' in page.text
    assert httpx.get(served.base_url + "/playground/playground.js").status_code == 200
    assert httpx.get(served.base_url + "/v1/models").status_code == 401  # the API itself still needs it


def test_a_streamed_answer_appears(browser: WebDriver, served: Server) -> None:
    wait = open_page(browser, served)
    wait.until(lambda b: DEFAULT_MODEL_ID in Select(b.find_element(By.ID, "model")).first_selected_option.text)
    browser.find_element(By.ID, "system").send_keys("You are a helpful assistant.")
    ask(browser, "Which city is the capital of France?")
    wait.until(lambda b: "Paris" in "".join(answers(b)))
    wait.until(lambda b: "tokens/s" in b.find_element(By.ID, "stats").text)
    assert browser.find_element(By.CSS_SELECTOR, ".msg.user").text == "Which city is the capital of France?"
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.save_screenshot(str(SHOTS / "playground-answer.png"))


def test_stop_ends_the_stream(browser: WebDriver, served: Server) -> None:
    wait = open_page(browser, served)
    browser.find_element(By.ID, "clear").click()
    ask(browser, "Write a very long story about a dragon who learns to count.", temperature="1", max_tokens="2000")
    wait.until(lambda b: len(answers(b)) == 1 and len(answers(b)[0]) > 20)
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".msg.assistant.stopped"))
    stopped_at = answers(browser)[0]
    assert browser.find_element(By.ID, "send").is_enabled()
    assert not browser.find_element(By.ID, "stop").is_enabled()
    time.sleep(1)  # had the stream gone on, more text would arrive in this second
    assert answers(browser)[0] == stopped_at


def test_server_errors_are_shown(browser: WebDriver, served: Server) -> None:
    wait = open_page(browser, served)
    browser.find_element(By.ID, "clear").click()
    ask(browser, "Hello", temperature="5")  # out of OpenAI's range: the server answers 400
    wait.until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("400: Invalid value for 'temperature'")
    browser.save_screenshot(str(SHOTS / "playground-error.png"))
    open_page(browser, served, key="sk-wrong")
    wait.until(lambda b: "401: Incorrect API key provided." in b.find_element(By.ID, "error").text)


def test_the_setting_turns_the_page_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTSERVE_PLAYGROUND", "false")
    srv = Server([], tmp_path / "server.log")
    try:
        srv.wait_ready()
        assert httpx.get(srv.base_url + "/").status_code == 404
    finally:
        srv.stop()
