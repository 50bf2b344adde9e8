"""The dashboard's browser tests: the real binary on the embedded store, Debian's Chromium driven
by Playwright, axe-core for accessibility. scripts/ui-test.sh installs the tools and sets:

  SCHEDULER_BIN    the service binary
  CHROMIUM         the browser (Debian's chromium; Playwright's own download is never used)
  FIREFOX          Debian's firefox-esr, and GECKODRIVER, its WebDriver (from crates.io)
  AXE_JS           axe-core's axe.min.js (from npm)
  UI_SCREENSHOTS   where each page's screenshot is saved
"""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("UI_SCREENSHOTS", ROOT / "target" / "ui-screenshots"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The binary on a free port with its embedded store in a directory of its own."""

    def __init__(self, flags=()):
        self.data = tempfile.mkdtemp(prefix="scheduler-ui-")
        self.port = free_port()
        self.flags = list(flags)
        self.process = None
        self.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            [os.environ.get("SCHEDULER_BIN", str(ROOT / "target/debug/scheduler")),
             "--host", "127.0.0.1", "--port", str(self.port), "--store", "embedded",
             "--data-dir", self.data, "--idle-poll-ms", "100", *self.flags],
            env={**os.environ, "RUST_LOG": "warn"},
            stdout=subprocess.DEVNULL,
        )
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the service did not start")

    def stop(self):
        self.process.kill()
        self.process.wait()

    def call(self, method, path, body=None, token=None):
        """A call of the REST API: the status and the JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            text = error.read()
            return error.code, json.loads(text) if text else None


@pytest.fixture
def service():
    s = Service()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # axe-core, injected by the browser itself: the dashboard's CSP allows no inline script.
    context.add_init_script(path=os.environ["AXE_JS"])
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def shoot(page, name):
    """Saves a screenshot of the page as a test artifact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def axe(page):
    """The serious and critical accessibility violations axe-core finds on the page."""
    result = page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
