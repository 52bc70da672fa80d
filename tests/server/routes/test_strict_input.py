"""Strict input: repeated parameters and headers, the effective scale after rounding, malformed queries,
error messages that quote values briefly and never carry object reprs, and multipart edge cases."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.server.helpers import TestClient, encode, make_app, random_image
from tests.server.routes.test_upscale import PNG, RAW, assert_error


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app()) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "query",
    [
        "scale=2&scale=3",
        "scale=2&format=png&format=jpeg",
        "scale_h=2&scale_w=2&scale_w=3",
        "scale=2&quality=1&quality=1",
    ],
)
def test_a_repeated_query_parameter_is_400(client, query):
    assert_error(
        client.post(f"/upscale?{query}", content=PNG, headers=RAW), 400, "repeated_parameter", "more than once"
    )


@pytest.mark.parametrize("name", ["x-anysr-budget", "x-anysr-deadline-ms", "content-type", "x-request-id"])
def test_a_repeated_single_valued_header_is_400(client, name):
    values = {"x-anysr-budget": "width=1.0", "x-anysr-deadline-ms": "60000", "content-type": "image/png"}
    value = values.get(name, "abc")
    headers = [("content-type", "image/png")] if name != "content-type" else []
    headers += [(name, value), (name, value)]
    response = client.post("/upscale?scale=2", content=PNG, headers=headers)
    assert_error(response, 400, "repeated_header", name)


def test_a_repeated_accept_is_allowed_as_a_list(client):
    headers = [("content-type", "image/png"), ("accept", "image/webp"), ("accept", "image/png")]
    assert client.post("/upscale?scale=2", content=PNG, headers=headers).status_code == 200


def test_repeats_are_refused_on_every_route(client):
    assert_error(client.get("/v1/model?size=8x8&size=9x9"), 400, "repeated_parameter")


def test_each_axis_effective_scale_after_rounding_must_exceed_the_minimum(client):
    """scale=1.0001 on a 48-pixel side rounds back to 48: an effective scale of 1, which is not > 1."""
    square = encode(random_image(48, 48))
    assert_error(
        client.post("/upscale?scale=1.0001", content=square, headers=RAW),
        422,
        "scale_out_of_range",
        "48 pixels from 48",
    )
    response = client.post("/upscale?scale_h=2&scale_w=1.001", content=square, headers=RAW)
    assert_error(response, 422, "scale_out_of_range", "scale_w")
    assert client.post("/upscale?scale=1.02", content=square, headers=RAW).status_code == 200  # 48 → 49


@pytest.mark.parametrize(
    "query",
    [
        "size=" + "9" * 5000 + "x1",
        "size=1x" + "9" * 5000,
        "size=0x5",
        "size=%00",
        "size=10x10&scale=" + "9" * 5000,
        "size=10x10&scale=nan",
        "size=10x10&scale=-inf",
        "size=10x10&scale=1e400",
        "size=9999999x9999999",
    ],
)
def test_no_malformed_model_query_is_a_500(client, query):
    response = client.get(f"/v1/model?{query}")
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


@pytest.mark.parametrize(
    "query",
    [
        "scale=" + "9" * 5000,
        "scale=2&quality=" + "9" * 5000,
        "scale=2&format=" + "x" * 5000,
        "scale=%ff%fe",
        "scale=2&keep_exif=maybe",
    ],
)
def test_no_malformed_upscale_query_is_a_500_and_values_are_quoted_briefly(client, query):
    response = client.post(f"/upscale?{query}", content=PNG, headers=RAW)
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["error"]["message"]
    assert len(message) < 400 and "9" * 150 not in message and "x" * 150 not in message


def test_messages_never_carry_object_reprs(client):
    response = client.post("/upscale?scale=2", content=b"\x00" * 64, headers=RAW)
    assert_error(response, 400, "invalid_image")
    assert " at 0x" not in response.text and "<_io" not in response.text
    response = client.post("/upscale?scale=2", content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, headers=RAW)
    assert " at 0x" not in response.text


def test_a_long_header_value_is_quoted_cut_short(client):
    response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-anysr-budget": "gflops=" + "x" * 5000})
    assert_error(response, 400, "invalid_budget", "characters)")
    assert len(response.json()["error"]["message"]) < 300


# -- multipart ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["image", "file"])
def test_multipart_accepts_image_or_file(client, field):
    response = client.post("/upscale?scale=2", files={field: ("in.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (48, 40)


def test_multipart_without_a_closing_boundary_is_invalid_multipart_not_missing_image(client):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + PNG  # ...and no closing --b0undary--
    response = client.post(
        "/upscale?scale=2", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert_error(response, 400, "invalid_multipart", "closing boundary")


def test_multipart_without_a_boundary_parameter_is_400(client):
    response = client.post("/upscale?scale=2", content=b"--x--", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "invalid_multipart", "boundary")


def test_multipart_with_two_files_is_400(client):
    files = [("image", ("a.png", PNG, "image/png")), ("file", ("b.png", PNG, "image/png"))]
    assert_error(client.post("/upscale?scale=2", files=files), 400, "invalid_multipart")
