"""GET / and /ui/*: the try-it page's files, its offline and public-API-only promises, kept in step with the server.

The page itself is exercised in a real browser by ``test_ui_browser.py``; these checks need no browser.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import ServerMetrics
from server.routes.ui import ASSETS, read_asset
from server.scheduler import REASONS
from tests.server.helpers import TestClient, make_app

REPO = Path(__file__).resolve().parents[3]
HTML = read_asset("index.html").decode()
SCRIPT = read_asset("ui.js").decode()
STYLE = read_asset("ui.css").decode()


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app()) as test_client:
        yield test_client


def test_root_serves_the_page_with_a_strict_policy(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == HTML
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "connect-src 'self' blob:" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_file_the_page_links_is_served_with_its_type(client):
    linked = re.findall(r'(?:href|src)="(/ui/[^"]+)"', HTML)
    assert sorted(linked) == ["/ui/ui.css", "/ui/ui.js"]
    for path in linked:
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == ASSETS[path.removeprefix("/ui/")]
        assert "content-security-policy" in response.headers


@pytest.mark.parametrize("path", ["/ui/app.py", "/ui/..%2F..%2Fapp.py", "/ui/", "/ui/INDEX.HTML"])
def test_nothing_else_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_page_needs_nothing_from_outside_this_server():
    for name, text in (("index.html", HTML), ("ui.js", SCRIPT), ("ui.css", STYLE)):
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
        assert "@import" not in text and "@font-face" not in text and "url(" not in text, name


def test_the_page_uses_only_the_public_api(client):
    # Every request goes through api(), so the paths found below are all the page calls.
    assert len(re.findall(r"\bfetch\((?!\))", SCRIPT)) == 1
    called = set(re.findall(r"api\(\s*[`\"'](/[a-z0-9/_]*)", SCRIPT))
    assert called == {"/upscale", "/v1/model", "/metrics"}
    public = set(client.get("/openapi.json").json()["paths"])  # the API the server documents
    assert called <= public


def test_every_element_the_script_uses_is_in_the_page():
    used = set(re.findall(r"\$\(\"([a-z0-9-]+)\"\)", SCRIPT))
    defined = set(re.findall(r'\bid="([a-z0-9-]+)"', HTML))
    assert used and used <= defined, used - defined


def test_live_status_reads_metrics_the_server_has():
    read = set(re.findall(r"\"(anysr_[a-z_]+)\"", SCRIPT))
    families = text_string_to_metric_families(ServerMetrics().render().decode())
    names = {family.name + ("_total" if family.type == "counter" else "") for family in families}
    assert read and read <= names, read - names


def test_every_scheduler_reason_is_explained_on_the_page():
    explained = set(re.findall(r"\b([a-z_]+): \"", SCRIPT[SCRIPT.index("const REASONS") : SCRIPT.index("};")]))
    assert explained == set(REASONS)


def test_the_page_is_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["server"]
    for name in ASSETS:
        assert any(fnmatch(f"static/{name}", pattern) for pattern in patterns), name
