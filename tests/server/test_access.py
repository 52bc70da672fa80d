"""Access control: API keys (env list or file, constant-time check), admin routes open or on their own
port, per-key in-flight limits, CORS off by default and configurable."""

from __future__ import annotations

import pytest

from server.access import ApiKeys, read_keys_file
from tests.server.helpers import TestClient, fast_settings, make_app
from tests.server.routes.test_upscale import PNG, RAW, assert_error, requests_total


def test_keys_are_kept_as_digests_and_identified_by_a_short_id(tmp_path):
    keys = ApiKeys.from_keys(["alpha", "beta", "alpha", " "])
    assert len(keys.digests) == 2 and all(b"alpha" not in digest for digest in keys.digests)
    assert keys.identify("alpha") == keys.digests[0].hex()[:12]
    assert keys.identify("beta") != keys.identify("alpha")
    assert keys.identify("alph") is None and keys.identify("") is None
    path = tmp_path / "keys.txt"
    path.write_text("# staff\ngamma  # the CI key\n\ndelta\n")
    assert read_keys_file(path) == ["gamma", "delta"]


def test_without_keys_everything_is_open():
    with TestClient(make_app()) as client:
        assert client.post("/upscale?scale=2", content=PNG, headers=RAW).status_code == 200


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("from-file\n")
    settings = fast_settings(api_keys="from-env,second", api_keys_file=path, max_requests_per_key=1)
    with TestClient(make_app(settings)) as client:
        yield client


@pytest.mark.parametrize("key", ["from-env", "second", "from-file"])
def test_any_configured_key_opens_the_api(keyed, key):
    response = keyed.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": key})
    assert response.status_code == 200, response.text
    assert keyed.get("/v1/model", headers={"x-api-key": key}).status_code == 200


def test_a_missing_or_wrong_key_is_401_and_counted(keyed):
    before = requests_total(keyed, 401)
    assert_error(keyed.post("/upscale?scale=2", content=PNG, headers=RAW), 401, "missing_api_key", "X-API-Key")
    response = keyed.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": "nope"})
    assert_error(response, 401, "invalid_api_key")
    assert "nope" not in response.text
    assert_error(keyed.get("/v1/model"), 401, "missing_api_key")
    assert_error(keyed.get("/nowhere"), 401, "missing_api_key")  # unknown paths reveal nothing either
    assert requests_total(keyed, 401) == before + 2


def test_the_try_it_page_loads_without_a_key_and_learns_it_needs_one(keyed):
    """The page's static files are public (they hold no data); /v1/model, behind the key, says which header."""
    page = keyed.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert keyed.get("/ui/ui.js").status_code == 200
    assert_error(keyed.get("/ui/absent.js"), 404, "not_found")
    described = keyed.get("/v1/model", headers={"x-api-key": "second"}).json()
    assert described["auth"] == {"required": True, "header": "X-API-Key"}


def test_an_open_server_says_no_key_is_needed():
    with TestClient(make_app()) as client:
        assert client.get("/v1/model").json()["auth"] == {"required": False, "header": "X-API-Key"}


def test_health_metrics_and_docs_stay_open_by_default(keyed):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert keyed.get(path).status_code == 200, path


def test_admin_routes_can_require_a_key_too():
    with TestClient(make_app(fast_settings(api_keys="k", public_admin=False))) as client:
        assert_error(client.get("/metrics"), 401, "missing_api_key")
        assert client.get("/metrics", headers={"x-api-key": "k"}).status_code == 200


def test_a_repeated_key_header_is_400(keyed):
    headers = [("content-type", "image/png"), ("x-api-key", "from-env"), ("x-api-key", "from-env")]
    assert_error(keyed.post("/upscale?scale=2", content=PNG, headers=headers), 400, "repeated_header", "x-api-key")


def test_the_key_header_is_configurable():
    with TestClient(make_app(fast_settings(api_keys="k", api_key_header="Authorization-Key"))) as client:
        assert client.get("/v1/model", headers={"authorization-key": "k"}).status_code == 200
        assert_error(client.get("/v1/model", headers={"x-api-key": "k"}), 401, "missing_api_key", "Authorization-Key")


def test_per_key_in_flight_limit_is_429(keyed):
    lifecycle = keyed.app.state.lifecycle
    key_id = ApiKeys.from_keys(["from-env"]).identify("from-env")
    with lifecycle.admit("elsewhere", key_id):  # one request of this key in flight, from another address
        response = keyed.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": "from-env"})
        assert_error(response, 429, "too_many_requests", f"API key {key_id}")
        other = keyed.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": "second"})
        assert other.status_code == 200  # another key is not affected
    assert keyed.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": "from-env"}).status_code == 200


def test_admin_routes_can_move_to_their_own_port():
    settings = fast_settings(api_keys="k", admin_port=9100)
    with TestClient(make_app(settings)) as main, TestClient(main.app, base_url="http://testserver:9100") as admin:
        assert admin.get("/metrics").status_code == 200  # no key on the admin port
        assert admin.get("/readyz").status_code == 200
        assert_error(admin.post("/upscale?scale=2", content=PNG, headers=RAW), 404, "not_found", "main port")
        assert_error(main.get("/metrics", headers={"x-api-key": "k"}), 404, "not_found", "port 9100")
        assert main.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-api-key": "k"}).status_code == 200


# -- CORS --------------------------------------------------------------------------------------------


def test_cors_is_off_by_default():
    with TestClient(make_app()) as client:
        response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"origin": "https://example.org"})
        assert "access-control-allow-origin" not in response.headers
        preflight = client.options(
            "/upscale", headers={"origin": "https://x.org", "access-control-request-method": "POST"}
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured_exposes_the_anysr_headers_and_server_timing():
    settings = fast_settings(cors_origins="https://app.example.org", api_keys="k")
    with TestClient(make_app(settings)) as client:
        preflight = client.options(
            "/upscale",
            headers={
                "origin": "https://app.example.org",
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-api-key, x-anysr-deadline-ms, content-type",
            },
        )
        assert preflight.status_code == 200  # no key needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.org"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        headers = RAW | {"origin": "https://app.example.org", "x-api-key": "k"}
        response = client.post("/upscale?scale=2", content=PNG, headers=headers)
        exposed = response.headers["access-control-expose-headers"].lower()
        for name in ("x-anysr-width", "x-anysr-flops", "x-anysr-reason", "x-anysr-tiles", "server-timing"):
            assert name in exposed
        refused = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"origin": "https://app.example.org"})
        assert (
            refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example.org"
        )
        other = client.post(
            "/upscale?scale=2", content=PNG, headers=RAW | {"origin": "https://evil.example", "x-api-key": "k"}
        )
        assert "access-control-allow-origin" not in other.headers
