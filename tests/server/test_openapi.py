"""server/openapi.py: the document states the request body, every status with the real error shape, and the
bounds of every parameter and header, from the running settings. (schemathesis checks the server against it
in CI: .ci/schemathesis.)"""

from __future__ import annotations

import re

from models.widths import WIDTHS
from server.headers import BUDGET_PATTERN, parse_budget
from tests.server.helpers import TestClient, fast_settings, make_app


def document(**overrides) -> dict:
    with TestClient(make_app(fast_settings(**overrides))) as client:
        return client.get("/openapi.json").json()


def test_upscale_states_its_body_statuses_and_error_schema():
    spec = document()
    operation = spec["paths"]["/upscale"]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"image/png", "image/jpeg", "image/webp", "multipart/form-data"}
    assert set(body["content"]["multipart/form-data"]["schema"]["properties"]) == {"image", "file"}
    statuses = set(operation["responses"])
    assert statuses == {"200", "400", "406", "408", "413", "415", "422", "429", "499", "500", "503", "504"}
    for status, response in operation["responses"].items():
        if status != "200":
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert set(operation["responses"]["200"]["content"]) == {
        "image/png",
        "image/jpeg",
        "image/webp",
        "application/json",
    }
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "detail" not in str(spec["paths"])


def test_every_parameter_and_header_has_bounds_from_the_settings():
    spec = document(min_scale=1.5, max_scale=6.0, output_formats="png,webp")
    parameters = {item["name"]: item["schema"] for item in spec["paths"]["/upscale"]["post"]["parameters"]}
    for name in ("scale", "scale_h", "scale_w"):
        assert parameters[name]["exclusiveMinimum"] == 1.5 and parameters[name]["maximum"] == 6.0
    assert parameters["format"]["enum"] == ["png", "webp"]
    assert (parameters["quality"]["minimum"], parameters["quality"]["maximum"]) == (1, 100)
    assert parameters["keep_exif"]["type"] == "boolean"
    assert parameters["X-AnySR-Deadline-Ms"]["exclusiveMinimum"] == 0
    assert parameters["X-AnySR-Budget"]["pattern"] == BUDGET_PATTERN
    model = {item["name"]: item["schema"] for item in spec["paths"]["/v1/model"]["get"]["parameters"]}
    assert "pattern" in model["size"] and model["scale"]["maximum"] == 6.0


def test_the_budget_pattern_is_the_parsers_grammar():
    for text in ("width=0.5", "gflops=40", " gflops = 1.5 , width=1.0 ", "width=.7"):
        assert re.match(BUDGET_PATTERN, text)
        parse_budget(text, WIDTHS)
    for text in ("GFLOPS=1", "gflops=1e3", "gflops=-1", "width=0.5;gflops=1", "gflops=1,width=1,gflops=2"):
        assert not re.match(BUDGET_PATTERN, text)


def test_keys_add_a_security_scheme_and_401_and_an_admin_port_removes_admin_routes():
    spec = document(api_keys="k", admin_port=9100)
    assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    upscale = spec["paths"]["/upscale"]["post"]
    assert upscale["security"] == [{"ApiKey": []}] and "401" in upscale["responses"]
    assert "/metrics" not in spec["paths"] and "/healthz" not in spec["paths"]
