"""A live server in a thread and a headless Chromium driving it, for the try-it page's browser tests.

Chromium comes from Debian (``apt-get install chromium chromium-driver``; no browser can be downloaded
here) and is driven through Selenium. Without them the tests skip with the reason, so ``make test`` passes
on a bare machine; ``.ci/run`` installs them and sets ``ANYSR_REQUIRE_BROWSER=1``, which turns the skip
into a failure so CI cannot go green without really running the browser.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

#: Flags known to work in this sandbox: no GPU, no sandboxing as root, and nothing that phones home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def skip_or_fail(reason: str) -> None:
    """Skip, unless the run demands the browser (CI), where a missing browser is an error."""
    if os.environ.get("ANYSR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ANYSR_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL once ready."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if server.started and httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("the live server did not become ready within 60 s")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def chromium(user_data_dir: Path) -> Iterator[Any]:
    """A headless Chromium WebDriver session, with the performance log on (to read response headers)."""
    browser = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        skip_or_fail("chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(driver: Any, path: Path) -> None:
    """The whole page (not only the viewport) as a PNG, through the DevTools protocol."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def responses(driver: Any, path: str) -> list[dict[str, Any]]:
    """Responses to requests whose URL path is ``path``, received since the last call (the log drains).

    Each is DevTools' ``Network.Response`` with header names lower-cased.
    """
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if httpx.URL(response["url"]).path == path:
            response["headers"] = {key.lower(): value for key, value in response["headers"].items()}
            found.append(response)
    return found
