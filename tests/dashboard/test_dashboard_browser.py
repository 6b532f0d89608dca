"""End to end: `callmood dashboard` on localhost, read by headless Chromium (Debian's
chromium + chromedriver, installed by `make browser`). Screenshots go to the test's
tmp_path (overview.png, explorer.png)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

pytest_plugins = ["dashboard_fixtures"]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def server(sample_results, tmp_path):
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    callmood = Path(sys.executable).with_name("callmood")
    proc = subprocess.Popen(
        [str(callmood), "dashboard", str(sample_results), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, "the dashboard's health check")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # callmood and the streamlit it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def metric(driver, label: str) -> str | None:
    """The value of the st.metric with this label, once rendered."""
    for box in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetric"]'):
        parts = box.text.splitlines()
        if parts and parts[0].strip() == label and len(parts) > 1:
            return parts[1].strip()
    return None


def test_overview_and_call_explorer_in_a_browser(server, browser, tmp_path):
    browser.get(server)
    assert wait_for(lambda: metric(browser, "Calls"), "the Calls metric") == "5"
    assert metric(browser, "Escalated calls") == "2"
    assert metric(browser, "Customer negative share") == "45%"
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]'),
             "the charts")
    browser.save_screenshot(str(tmp_path / "overview.png"))

    browser.get(f"{server}/explorer?call=c2")
    wait_for(lambda: metric(browser, "Agent"), "the call's metadata")
    assert metric(browser, "Agent") == "A2"
    assert metric(browser, "Queue") == "support"
    assert metric(browser, "Escalated") == "yes"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Call explorer" in body and "The recording is not available" in body
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]'),
             "the timeline")
    browser.save_screenshot(str(tmp_path / "explorer.png"))
    assert (tmp_path / "overview.png").stat().st_size > 10_000


def test_the_media_endpoint_serves_recordings_only(server, browser, sample_results):
    """The explorer's audio comes over HTTP from Streamlit's media endpoint; a scored
    recording swapped for a link to /etc/passwd is no longer served."""
    recording = sample_results.parent / "audio" / "c1.wav"
    browser.get(f"{server}/explorer?call=c1")
    player = wait_for(lambda: browser.find_elements(By.TAG_NAME, "audio"), "the player")
    source = wait_for(lambda: player[0].get_attribute("src"), "the audio's URL")
    with urllib.request.urlopen(source, timeout=10) as response:
        assert response.read(4) == b"RIFF"
    saved = recording.with_suffix(".saved")
    recording.rename(saved)
    try:
        recording.symlink_to("/etc/passwd")
        browser.get(f"{server}/explorer?call=c1")
        wait_for(lambda: "The recording is not available"
                 in browser.find_element(By.TAG_NAME, "body").text, "the warning")
        assert not browser.find_elements(By.TAG_NAME, "audio")
    finally:
        recording.unlink()
        saved.rename(recording)
