"""The try-it page in a real headless Chromium against a live server on a tiny random-weights model.

Each test saves a full-page screenshot of the state it checks under ``$ANYSR_TEST_OUTPUT/ui`` (default
``test-output/ui`` in the repository), so a person can look at what the browser showed. The
accessibility check runs axe-core (``$ANYSR_AXE_JS``: the path of ``axe.min.js``, installed from npm by
``.ci/run``) in the same browser; the keyboard check is our own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models import TINY_SPEC, build_model
from server.model_source import untrained_info
from server.settings import Settings
from tests.server.browser import chromium, live_server, responses, save_screenshot, skip_or_fail
from tests.server.helpers import make_app

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SHOTS = Path(os.environ.get("ANYSR_TEST_OUTPUT", REPO / "test-output")) / "ui"
INPUT_SIZE = (60, 80)  # LR height, width
WAIT_S = 60


def make_test_image(path: Path) -> Path:
    """A PNG with smooth colour, hard edges and fine stripes, so the before/after views show something."""
    h, w = INPUT_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rings = 0.5 + 0.5 * np.sin(np.hypot(x - w / 2, y - h / 2) / 3.0)
    pixels = np.stack([x / w, rings, y / h], axis=-1)
    pixels[h // 4 : h // 2, w // 6 : w // 2] = (0.95, 0.85, 0.2)
    pixels[h // 2 :, (w * 2) // 3 :] = np.where((x[h // 2 :, (w * 2) // 3 :, None] // 2) % 2 == 0, 0.1, 0.9)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def server() -> str:
    torch.manual_seed(0)
    model = build_model(TINY_SPEC)
    settings = Settings(warmup_size=8, load_sample_interval_s=0.2, max_batch_wait_ms=1.0)
    with live_server(make_app(settings, model=model, model_info=untrained_info(model))) as base:
        yield base


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as session:
        yield session


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return make_test_image(tmp_path_factory.mktemp("images") / "rings.png")


def element(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def text(driver, element_id: str) -> str:
    return element(driver, element_id).text


def wait(driver, condition, what: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message=f"waiting for {what}")


def open_page(driver, server: str, image: Path | None = None) -> None:
    driver.get(server + "/")
    wait(driver, lambda d: "widths" in text(d, "model-line"), "the model description")
    # The first /metrics poll is the width mix's baseline: let it land before this test's upscales.
    wait(driver, lambda d: "updated" in text(d, "s-note"), "the first live-status poll")
    driver.get_log("performance")  # start each test's network record empty
    if image is not None:
        element(driver, "file").send_keys(str(image))
        wait(driver, lambda d: "px" in text(d, "file-info"), "the image preview")


def set_value(driver, element_id: str, value: str) -> None:
    field = element(driver, element_id)
    field.clear()
    field.send_keys(value)


def submit_and_wait(driver, button: str = "go") -> None:
    from selenium.webdriver.common.keys import Keys

    element(driver, button).send_keys(Keys.ENTER)  # the keyboard, as a person without a mouse would
    wait(driver, lambda d: not text(d, "busy") and not element(d, "go").get_attribute("disabled"), "the answer")


def digits(value: str) -> int:
    return int(re.sub(r"[^0-9]", "", value))


def test_upscale_shows_what_the_server_answered(driver, server, image):
    open_page(driver, server, image)
    set_value(driver, "scale", "2.3")
    submit_and_wait(driver)
    assert element(driver, "error").is_displayed() is False, text(driver, "error")
    assert element(driver, "result").is_displayed()
    [answer] = responses(driver, "/upscale")
    headers = answer["headers"]
    assert answer["status"] == 200
    assert text(driver, "r-width") == headers["x-anysr-width"]
    assert text(driver, "r-reason") == headers["x-anysr-reason"]
    assert digits(text(driver, "r-flops").split("FLOPs")[0]) == int(headers["x-anysr-flops"])
    out_h, out_w = round(INPUT_SIZE[0] * 2.3), round(INPUT_SIZE[1] * 2.3)
    assert text(driver, "r-size") == f"{out_w}×{out_h} px"
    assert digits(text(driver, "r-bytes").split("bytes")[0]) == int(headers["content-length"])
    # The share of full width is the FLOPs over /v1/model's cost of the widest width for this request.
    table = httpx.get(f"{server}/v1/model", params={"size": "60x80", "scale": 2.3}).json()["flops"]["per_width"]
    share = round(100 * int(headers["x-anysr-flops"]) / table["1.0"]["flops"])
    wait(driver, lambda d: f"{share}% of width 1.0" in text(d, "r-share"), "the share of full width")
    # Before and after are shown at one display size; the download is the answer's own bytes.
    sizes = driver.execute_script(
        "return ['before-img', 'after-img'].map(id => { const r = document.getElementById(id)"
        ".getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; })"
    )
    assert sizes[0] == sizes[1] and sizes[0][0] > 0
    downloaded = driver.execute_async_script(
        "const done = arguments[0]; fetch(document.getElementById('download').href)"
        ".then(r => r.blob()).then(b => done(b.size))"
    )
    assert downloaded == int(headers["content-length"])
    assert element(driver, "download").get_attribute("download").endswith(".png")
    for stage in ("queue", "decode", "compute", "encode"):
        assert stage in text(driver, "timing-legend")
    assert "UNTRAINED" in text(driver, "untrained")
    # Live status polls /metrics; this upscale shows in the recent width mix.
    wait(driver, lambda d: headers["x-anysr-width"] + ": " in text(d, "mix-legend"), "the width mix")
    assert text(driver, "s-load").split(" ")[0] in ("idle", "moderate", "heavy", "overloaded")
    save_screenshot(driver, SHOTS / "1-result-x2.3.png")


@pytest.fixture(scope="module")
def keyed_server() -> str:
    torch.manual_seed(0)
    model = build_model(TINY_SPEC)
    settings = Settings(warmup_size=8, load_sample_interval_s=0.2, max_batch_wait_ms=1.0, api_keys="s3cret-key")
    with live_server(make_app(settings, model=model, model_info=untrained_info(model))) as base:
        yield base


def test_a_server_with_api_keys_asks_for_one_and_the_page_then_works(driver, keyed_server, image):
    """The page loads without a key, /v1/model answers 401, the key field appears; with the key typed the
    page reads the model and upscales, sending the key in the header /v1/model names."""
    from selenium.webdriver.common.keys import Keys

    driver.get(keyed_server + "/")
    wait(driver, lambda d: element(d, "key-field").is_displayed(), "the API-key field")
    assert text(driver, "error-code") == "401 missing_api_key:" and "X-API-Key" in text(driver, "error-message")
    save_screenshot(driver, SHOTS / "7-api-key-asked.png")
    element(driver, "api-key").send_keys("s3cret-key", Keys.TAB)  # a change event, as a person leaving the field
    wait(driver, lambda d: "widths" in text(d, "model-line"), "the model description with the key")
    element(driver, "file").send_keys(str(image))
    wait(driver, lambda d: "px" in text(d, "file-info"), "the image preview")
    driver.get_log("performance")
    submit_and_wait(driver)
    [answer] = responses(driver, "/upscale")
    assert answer["status"] == 200
    assert element(driver, "error").is_displayed() is False
    assert httpx.post(f"{keyed_server}/upscale?scale=2", content=b"x").status_code == 401  # the key is needed
    save_screenshot(driver, SHOTS / "8-api-key-result.png")


def test_forced_width_is_honoured(driver, server, image):
    open_page(driver, server, image)
    set_value(driver, "scale", "2.3")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.find_element(By.CSS_SELECTOR, "input[name=budget][value=width]").click()
    Select(element(driver, "budget-width")).select_by_value("0.5")
    submit_and_wait(driver)
    [answer] = responses(driver, "/upscale")
    assert answer["headers"]["x-anysr-width"] == "0.5" and answer["headers"]["x-anysr-reason"] == "forced"
    assert text(driver, "r-width") == "0.5"
    assert text(driver, "r-reason") == "forced"
    save_screenshot(driver, SHOTS / "2-forced-width-0.5.png")


def test_separate_height_and_width_scales(driver, server, image):
    open_page(driver, server, image)
    element(driver, "per-axis").click()
    set_value(driver, "scale-h", "1.5")
    set_value(driver, "scale-w", "2.5")
    submit_and_wait(driver)
    [answer] = responses(driver, "/upscale")
    assert answer["status"] == 200 and "scale_h=1.5" in answer["url"] and "scale_w=2.5" in answer["url"]
    assert text(driver, "r-size") == f"{round(INPUT_SIZE[1] * 2.5)}×{round(INPUT_SIZE[0] * 1.5)} px"
    query = {"size": "60x80", "scale_h": 1.5, "scale_w": 2.5}
    full = httpx.get(f"{server}/v1/model", params=query).json()["flops"]["per_width"]["1.0"]["flops"]
    share = round(100 * int(answer["headers"]["x-anysr-flops"]) / full)
    wait(driver, lambda d: f"{share}% of width 1.0" in text(d, "r-share"), "the share of full width")


def test_compare_view_runs_every_width(driver, server, image):
    open_page(driver, server, image)
    set_value(driver, "scale", "2.3")
    submit_and_wait(driver, "compare")
    assert element(driver, "error").is_displayed() is False, text(driver, "error")
    widths = httpx.get(f"{server}/v1/model").json()["served_widths"]
    answers = responses(driver, "/upscale")
    assert [float(a["headers"]["x-anysr-width"]) for a in answers] == sorted(widths)
    assert {a["headers"]["x-anysr-reason"] for a in answers} == {"forced"}
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#compare-rows tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    assert [row[0] for row in rows] == [f"{w:.1f}" for w in sorted(widths)]
    assert rows[-1][3] == "reference"
    for row in rows[:-1]:  # different widths of one model give different pixels: a finite PSNR
        assert re.fullmatch(r"\d+\.\d\d dB", row[3]), row
    gflops = [float(row[1].split(" ")[0]) for row in rows]
    assert gflops == sorted(gflops) and gflops[0] < gflops[-1]
    save_screenshot(driver, SHOTS / "3-compare-widths.png")


def test_invalid_file_shows_the_api_error(driver, server, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    open_page(driver, server)
    element(driver, "file").send_keys(str(broken))
    wait(driver, lambda d: "no preview" in text(d, "file-info"), "the failed preview")
    submit_and_wait(driver)
    [answer] = responses(driver, "/upscale")
    files = {"image": ("broken.png", broken.read_bytes(), "image/png")}
    expected = httpx.post(f"{server}/upscale", params={"scale": 2, "format": "png"}, files=files).json()["error"]
    assert answer["status"] == 400
    assert element(driver, "error").is_displayed()
    assert text(driver, "error-code") == f"400 {expected['code']}:"
    assert text(driver, "error-message") == expected["message"]
    assert element(driver, "result").is_displayed() is False
    save_screenshot(driver, SHOTS / "4-invalid-file.png")


def test_every_control_is_reachable_by_keyboard_with_a_visible_focus(driver, server, image):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(driver, server, image)
    submit_and_wait(driver)
    reached: list[list] = []
    for _ in range(80):  # Tab until the focus has gone round the whole page once
        ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.execute_script(
            "const e = document.activeElement; const s = getComputedStyle(e);"
            "const ring = e.id === 'file' ? getComputedStyle(document.getElementById('drop')) : s;"
            "return [e.id || e.name || e.tagName, ring.outlineStyle !== 'none' && ring.outlineWidth !== '0px']"
        )
        if focused[0] == "BODY":  # between the last control and the first
            continue
        if focused in reached:
            break
        reached.append(focused)
    ids = [name for name, _ in reached]
    for expected in ("file", "scale-range", "scale", "per-axis", "budget", "deadline", "format", "go"):
        assert expected in ids, (expected, ids)
    for expected in ("viewer", "split", "download"):
        assert expected in ids, (expected, ids)
    assert all(visible for _, visible in reached), [name for name, visible in reached if not visible]
    # The divider and the crop move with the arrow keys.
    before = element(driver, "split").get_attribute("value")
    element(driver, "split").send_keys(Keys.ARROW_LEFT)
    assert element(driver, "split").get_attribute("value") != before
    box = element(driver, "crop-box").get_attribute("style")
    element(driver, "viewer").send_keys(Keys.ARROW_RIGHT)
    assert element(driver, "crop-box").get_attribute("style") != box


def run_axe(driver, axe_source: str) -> list[str]:
    driver.execute_script(axe_source)
    return driver.execute_async_script(
        "const done = arguments[0];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', "
        "'best-practice']}}).then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' ' + "
        "v.nodes.map(n => n.target.join(' ')).join(', '))))"
    )


def test_axe_finds_no_accessibility_violations(driver, server, image):
    axe_js = os.environ.get("ANYSR_AXE_JS")
    if not axe_js or not Path(axe_js).is_file():
        skip_or_fail("axe-core not found: set ANYSR_AXE_JS to axe.min.js (npm install axe-core; .ci/run does)")
    source = Path(axe_js).read_text()
    open_page(driver, server)
    assert run_axe(driver, source) == []
    save_screenshot(driver, SHOTS / "0-empty.png")
    element(driver, "file").send_keys(str(image))
    wait(driver, lambda d: "px" in text(d, "file-info"), "the image preview")
    submit_and_wait(driver)
    submit_and_wait(driver, "compare")
    assert run_axe(driver, source) == []
    save_screenshot(driver, SHOTS / "5-result-and-compare.png")
