"""End to end: `callmood dashboard` on localhost, read by headless Chromium (Debian's
chromium + chromedriver, installed by `make browser`). Screenshots go to the test's
tmp_path (overview.png, explorer.png, agents.png).

Streamlit draws its tables on a canvas, so what a table shows is read by recording the
page's canvas drawing (`fillText`, `drawImage`) and from a screenshot of the table."""

import base64
import datetime as dt
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from dashboard_data import write_call
from PIL import Image
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


@contextmanager
def dashboard(results: Path, tmp_path: Path):
    """`callmood dashboard RESULTS` on a free port; yields its URL."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    callmood = Path(sys.executable).with_name("callmood")
    proc = subprocess.Popen(
        [str(callmood), "dashboard", str(results), "--server.port", str(port),
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
def server(sample_results, tmp_path):
    with dashboard(sample_results, tmp_path) as url:
        yield url


UTC = dt.timezone.utc
LONG_QUEUE = "tech_support_escalations"


@pytest.fixture(scope="module")
def glance_server(sample_results, tmp_path_factory):
    """The sample plus c6, a billing call on 2026-03-05 where only the agent spoke (the
    billing queue's negative share of that day is NULL; on 2026-03-03, 04, 06, 07 and 08
    it had no calls), and c7, a call in a queue with a long name."""
    tmp_path = tmp_path_factory.mktemp("glance")
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    write_call(results, "c6", (dt.datetime(2026, 3, 5, 11, tzinfo=UTC), "A2", "billing",
                               15.0, False, None, [("agent", 0, 10, "neutral", 0.9)]))
    write_call(results, "c7", (dt.datetime(2026, 3, 9, 16, tzinfo=UTC), "A1", LONG_QUEUE,
                               30.0, False, None, [("customer", 0, 10, "angry", 0.9),
                                                   ("agent", 10, 20, "neutral", 0.8)]))
    with dashboard(results, tmp_path) as url:
        yield url


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
    wait_for(lambda: metric(browser, "Escalated"), "the call's figures")
    assert metric(browser, "Escalated") == "yes"
    assert metric(browser, "Live alert") == "at 30 s"
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Agent: A2 · Queue: support · Peak negative: angry 0.95" in body
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


# Records what the page draws on its canvases (Streamlit's tables are canvases): each text
# and each image with its place in the canvas and the index of its table on the page.
RECORD_CANVAS = r"""
window.drawn = {text: [], images: []};
const P = CanvasRenderingContext2D.prototype, fillText = P.fillText, drawImage = P.drawImage;
const table = ctx => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
    .indexOf(ctx.canvas.closest('[data-testid="stDataFrame"]'));
P.fillText = function (text, x, y, ...rest) {
  const m = this.getTransform();
  window.drawn.text.push({table: table(this), text: String(text), x: m.a * x + m.e,
                          y: m.d * y + m.f});
  return fillText.call(this, text, x, y, ...rest);
};
P.drawImage = function (image, ...args) {
  const m = this.getTransform(), [x, y, w, h] = args.length > 4 ? args.slice(4) : args;
  if (image && image.src) {
    window.drawn.images.push({table: table(this), src: image.src, x: m.a * x + m.e,
                              y: m.d * y + m.f, w: m.a * (w ?? image.width),
                              h: m.d * (h ?? image.height)});
  }
  return drawImage.call(this, image, ...args);
};
"""

# Text cut off by the page: a metric or Markdown element whose content is wider than its
# box (Streamlit ends such text with an ellipsis).
CUT_OFF = """
const boxes = '[data-testid="stMain"] [data-testid="stMetric"], '
    + '[data-testid="stMain"] [data-testid="stMarkdownContainer"]';
return [...document.querySelectorAll(boxes)]
    .flatMap(box => [box, ...box.querySelectorAll('*')])
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth)
    .map(e => e.innerText);
"""
HEADER_PX, ROW_PX = 35, 35  # Streamlit's default table header and row heights


def drawn(driver, table: int) -> tuple[list[dict], list[dict]]:
    """Texts and images drawn so far in the page's table number `table`."""
    record = driver.execute_script("return window.drawn")
    return ([t for t in record["text"] if t["table"] == table],
            [i for i in record["images"] if i["table"] == table])


def row_of(item: dict) -> int:
    return int((item["y"] - HEADER_PX) // ROW_PX)


def coloured_runs(png: bytes, box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    """The x ranges (in the box) where a column of pixels has a strongly coloured one:
    a line or dots of a chart, not grey text or grid lines."""
    image = Image.open(io.BytesIO(png)).convert("RGB").crop(box)
    width, height = image.size
    pixels = image.load()
    marked = [any(max(pixels[x, y]) - min(pixels[x, y]) > 80 for y in range(height))
              for x in range(width)]
    runs, start = [], None
    for x, on in enumerate([*marked, False]):
        if on and start is None:
            start = x
        elif not on and start is not None:
            runs.append((start, x))
            start = None
    return runs


def test_the_overviews_figures_are_not_cut_off(glance_server, browser, tmp_path):
    """The last run read "2026-03-10 02:…" and the label "Customer negative sh…"."""
    browser.get(glance_server)
    wait_for(lambda: metric(browser, "Calls"), "the Calls metric")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR,
                                               '[data-testid="stVegaLiteChart"]')) >= 4,
             "the charts")
    assert "2026-03-10 02:05 UTC" in browser.find_element(By.CSS_SELECTOR,
                                                         '[data-testid="stMain"]').text
    browser.save_screenshot(str(tmp_path / "overview.png"))
    assert browser.execute_script(CUT_OFF) == []


def test_the_explorers_figures_are_not_cut_off(glance_server, browser, tmp_path):
    """The call's queue read "tech_su…" and its peak negative emotion "angry 0.…"."""
    browser.get(f"{glance_server}/explorer?call=c7")
    main = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"]'),
                    "the page")[0]
    wait_for(lambda: LONG_QUEUE in main.text, "the call's queue")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]'),
             "the timeline")
    browser.save_screenshot(str(tmp_path / "explorer.png"))
    assert browser.execute_script(CUT_OFF) == []


def open_agents_page(browser, url: str, tmp_path: Path) -> None:
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_CANVAS})
    browser.get(f"{url}/agents")
    wait_for(lambda: any(t["text"] == "billing" for t in drawn(browser, 1)[0]),
             "the queues table")
    browser.save_screenshot(str(tmp_path / "agents.png"))


def test_no_previous_period_reads_as_a_dash(glance_server, browser, tmp_path):
    """The agents' previous-period columns showed "None" where there was none."""
    open_agents_page(browser, glance_server, tmp_path)
    texts = {t["text"] for t in drawn(browser, 0)[0]}
    assert {"A1", "A2"} <= texts
    assert "None" not in texts and "–" in texts


def test_a_queues_days_without_calls_are_gaps_in_its_sparkline(glance_server, browser,
                                                                tmp_path):
    """The billing queue's sparkline showed its list as text ("0.333…,,0"): a NULL in the
    list, from its day without customer speech, made the line chart column give up."""
    open_agents_page(browser, glance_server, tmp_path)
    texts = drawn(browser, 1)[0]
    billing = next(row_of(t) for t in texts if t["text"] == "billing")
    assert not [t["text"] for t in texts if "," in t["text"]]  # no list shown as text

    def billing_charts():  # an image is drawn once it has loaded
        return [i for i in drawn(browser, 1)[1] if i["src"].startswith("data:image/svg+xml")
                and row_of({"y": i["y"] + i["h"] / 2}) == billing]

    chart = wait_for(billing_charts, "a chart in the billing row", timeout=10)[-1]
    time.sleep(0.5)  # the next frame has it on the canvas
    browser.save_screenshot(str(tmp_path / "agents.png"))
    canvas = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')[1] \
        .find_element(By.CSS_SELECTOR, '[data-testid="data-grid-canvas"]')
    box = (int(chart["x"]), int(chart["y"]), int(chart["x"] + chart["w"]),
           int(chart["y"] + chart["h"]))
    runs = coloured_runs(base64.b64decode(canvas.screenshot_as_base64), box)
    # 2026-03-02 and 2026-03-09 have a value; the days between are a gap
    assert len(runs) >= 2 and runs[-1][0] - runs[0][1] > chart["w"] / 2, runs
