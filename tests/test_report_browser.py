"""The report in a real browser: headless Chromium decodes every image, logs no error, and a
screenshot is written to tests/artifacts/ for a person to look at.

Chromium is driven over its DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so no Selenium, Playwright or websocket
package is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sarcograde.report import build_study_report
from test_report import build, write_fixture
from test_report_study import write_study

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--remote-debugging-pipe"]
TIMEOUT_S = 60


def chromium_path() -> str:
    """Chromium's path; in CI its absence fails the test, elsewhere it skips with the reason."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = ("headless Chromium not found (Debian package `chromium`; .ci/run installs it): "
                   "the report's browser test cannot run")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    """A headless Chromium page over the DevTools pipe, recording console errors."""

    def __init__(self, executable: str, profile: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def attach_pipes():  # Chromium reads commands on fd 3 and writes replies on fd 4.
            # Move both out of the way first: either pipe end may itself be fd 3 or 4.
            read_end = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], preexec_fn=attach_pipes, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.errors: list[str] = []
        target = next(t for t in self.call("Target.getTargets")["targetInfos"]
                      if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"],
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._from_child], [], [], max(0.0, deadline - time.time()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._record(message)
        return message

    def _record(self, event: dict) -> None:
        self.events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                        for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.time() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, method: str) -> None:
        deadline = time.time() + TIMEOUT_S
        seen = len(self.events)
        while not any(e["method"] == method for e in self.events[seen:]):
            self._read_message(deadline)

    def open(self, path: Path, width: int = 1280, height: int = 900) -> None:
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def screenshot(self, target: Path) -> None:
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        shot = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"],
                               "height": size["height"], "scale": 1})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


IMAGES_JS = ("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
             ".then(() => Array.from(document.images).map(i => [i.alt, i.naturalWidth]))")


@pytest.fixture
def browser(tmp_path):
    b = Browser(chromium_path(), tmp_path / "profile")
    yield b
    b.close()


def assert_renders(browser, page, *, min_images: int, sections: int, shot_name: str) -> None:
    """Every image decodes, no console error, the expected sections; a screenshot for a human."""
    browser.open(page)
    images = browser.evaluate(IMAGES_JS)
    assert len(images) >= min_images
    broken = [alt for alt, width in images if width <= 0]
    assert broken == [], f"images that did not decode: {broken}"
    assert browser.errors == []
    assert browser.evaluate("document.querySelectorAll('section h2').length") == sections
    shot = ARTIFACTS / shot_name
    browser.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
    print(f"screenshot: {shot}")


def test_report_renders_in_chromium(browser, tmp_path):
    paths = write_fixture(tmp_path / "fixture", synthetic=True)
    page = tmp_path / "report.html"
    build(paths, page)
    # + abstention, subgroups, recalibration ("not run" here: the fixture's metrics.json has none)
    assert_renders(browser, page, min_images=11, sections=11, shot_name="report_screenshot.png")


def test_study_report_renders_in_chromium(browser, tmp_path):
    root = write_study(tmp_path / "study", hostile=True)
    page = build_study_report(root)
    # + decision curves, abstention, subgroups and recalibration, with their figures; the
    # acquisition table and the TRIPOD+AI checklist
    assert_renders(browser, page, min_images=30 + 3 * 4, sections=18,
                   shot_name="study_report_screenshot.png")
    # The hostile model name and patient id stay text: no element was injected.
    assert browser.evaluate("document.querySelectorAll('main b, main img[src=x]').length") == 0


def test_the_harness_sees_broken_images_and_console_errors(browser, tmp_path):
    # Without this, a harness that saw nothing would pass the test above.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img alt="bad" src="data:image/png;base64,'
                    'iVBORw0KGgoAAAA="><script>console.error("boom")</script></body></html>')
    browser.open(page)
    assert browser.evaluate(IMAGES_JS) == [["bad", 0]]
    assert any("boom" in e for e in browser.errors)
