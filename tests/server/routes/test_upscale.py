"""POST /upscale with a tiny model: the happy paths, every error status, headers and metric deltas."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from models import TINY_SPEC, build_model, count_flops
from server.runner import ModelRunner, RunnerConfig
from server.tiling import plan_tiles
from tests.server.helpers import TINY_META, TestClient, encode, fast_settings, make_app, random_image

PNG = encode(random_image(20, 24))
#: Large enough to be cut into tiles with the test settings' 16-pixel tiles and 8-pixel halo.
TILED_PNG = encode(random_image(40, 44, seed=1))
RAW = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app()) as test_client:
        yield test_client


def requests_total(client: TestClient, status: int) -> float:
    value = client.app.state.metrics.registry.get_sample_value("anysr_requests_total", {"status": str(status)})
    return value or 0.0


def assert_error(response, status: int, code: str, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    for fragment in fragments:
        assert fragment in body["error"]["message"]
    assert response.headers["x-request-id"]


# -- success -----------------------------------------------------------------------------------------


def test_raw_png_upscale_with_headers(client):
    before = requests_total(client, 200)
    response = client.post("/upscale?scale=2.3", content=TILED_PNG, headers=RAW | {"x-request-id": "req-42"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (round(44 * 2.3), round(40 * 2.3))
    width = float(response.headers["x-anysr-width"])
    assert width in (0.5, 0.7, 0.9, 1.0)
    assert response.headers["x-anysr-reason"]
    assert response.headers["x-request-id"] == "req-42"
    # FLOPs are exactly what the tiled plan runs at the chosen width.
    plan = plan_tiles((40, 44), (92, 101), tile_size=16, halo=TINY_META.receptive_radius)
    assert int(response.headers["x-anysr-flops"]) == plan.flops(TINY_META, width)
    assert int(response.headers["x-anysr-tiles"]) == plan.count > 1
    timing = response.headers["server-timing"]
    for part in ("queue;dur=", "decode;dur=", "compute;dur=", "encode;dur="):
        assert part in timing
    assert requests_total(client, 200) == before + 1


def test_tiled_response_matches_whole_image_inference():
    """Tiles write themselves into the output canvas as batches finish (several batches, in order):
    the stitched image equals running the model on the whole image, up to one 8-bit level."""
    torch.manual_seed(3)
    model = build_model(TINY_SPEC).eval()
    settings = fast_settings(max_batch_tiles=2)
    with TestClient(make_app(settings, model=model)) as client:
        response = client.post("/upscale?scale=2.3", content=TILED_PNG, headers=RAW | {"x-anysr-budget": "width=1.0"})
    assert response.status_code == 200, response.text
    assert int(response.headers["x-anysr-tiles"]) > 2
    served = torch.from_numpy(np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).copy())
    lr = torch.from_numpy(np.asarray(Image.open(io.BytesIO(TILED_PNG)).convert("RGB")).copy())
    lr = lr.permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        whole = model.upscale(lr, (served.shape[0], served.shape[1]), 1.0, (2.3, 2.3))
    expected = (whole[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    difference = (served.int() - expected.int()).abs()
    assert int(difference.max()) <= 1 and float((difference > 0).float().mean()) < 0.02


def test_multipart_upload(client):
    response = client.post("/upscale?scale=2", files={"image": ("in.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (48, 40)


def test_json_answer_carries_the_same_facts(client):
    response = client.post(
        "/upscale?scale_h=1.5&scale_w=3&format=jpeg&quality=70",
        content=PNG,
        headers=RAW | {"accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output_size"] == [30, 72] and body["input_size"] == [20, 24]
    assert body["scale"] == [1.5, 3.0]
    assert body["media_type"] == "image/jpeg"
    assert body["width"] == float(response.headers["x-anysr-width"])
    assert body["flops"] == int(response.headers["x-anysr-flops"])
    assert body["flops_whole_image"] == count_flops(TINY_META, (20, 24), (30, 72), body["width"]).total
    assert body["request_id"] == response.headers["x-request-id"]
    assert set(body["timing_ms"]) == {"queue", "decode", "compute", "encode", "total"}
    image = Image.open(io.BytesIO(base64.b64decode(body["image_base64"])))
    assert image.format == "JPEG" and image.size == (72, 30)


@pytest.mark.parametrize(("fmt", "pillow"), [("webp", "WEBP"), ("jpeg", "JPEG"), ("png", "PNG")])
def test_output_formats(client, fmt, pillow):
    response = client.post(f"/upscale?scale=1.5&format={fmt}", content=PNG, headers=RAW)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"image/{fmt}"
    assert Image.open(io.BytesIO(response.content)).format == pillow


def test_forced_width_and_budget_headers(client):
    forced = client.post("/upscale?scale=4", content=PNG, headers=RAW | {"x-anysr-budget": "width=0.5"})
    assert forced.headers["x-anysr-width"] == "0.5" and forced.headers["x-anysr-reason"] == "forced"
    plan = plan_tiles((20, 24), (80, 96), tile_size=16, halo=TINY_META.receptive_radius)
    cost = {width: plan.flops(TINY_META, width) for width in (0.5, 0.7, 0.9, 1.0)}
    budget_gflops = (cost[0.9] + 1) / 1e9
    response = client.post(
        "/upscale?scale=4", content=PNG, headers=RAW | {"x-anysr-budget": f"gflops={budget_gflops:.9f}"}
    )
    assert response.status_code == 200
    assert response.headers["x-anysr-width"] == "0.9" and response.headers["x-anysr-reason"] == "budget"
    assert int(response.headers["x-anysr-flops"]) <= budget_gflops * 1e9


def test_generous_deadline_is_met_at_the_policys_width(client):
    response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-anysr-deadline-ms": "60000"})
    assert response.status_code == 200
    assert response.headers["x-anysr-reason"] != "deadline"  # the deadline did not have to narrow it


def test_width_decisions_and_flops_are_counted(client):
    registry = client.app.state.metrics.registry
    response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-anysr-budget": "width=0.7"})
    labels = {"width": "0.7", "reason": "forced"}
    assert registry.get_sample_value("anysr_width_selected_total", labels) >= 1
    assert registry.get_sample_value("anysr_flops_total", {"width": "0.7"}) >= int(response.headers["x-anysr-flops"])
    assert registry.get_sample_value("anysr_request_duration_seconds_count", {"width": "0.7"}) >= 1


# -- 400 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "code", "fragment"),
    [
        ("scale=abc", {}, "invalid_parameter", "scale"),
        ("quality=high&scale=2", {}, "invalid_parameter", "quality"),
        ("", {}, "missing_scale", "give 'scale'"),
        ("scale_h=2", {}, "missing_scale", "scale_w"),
        ("scale=2", {"x-anysr-budget": "gflops=lots"}, "invalid_budget", "and/or"),
        ("scale=2", {"x-anysr-budget": "gflops=0"}, "invalid_budget", "positive number"),
        ("scale=2", {"x-anysr-budget": "width=0.6"}, "invalid_budget", "width must be one of"),
        ("scale=2", {"x-anysr-deadline-ms": "-3"}, "invalid_deadline", "milliseconds"),
    ],
)
def test_malformed_parameters_are_400(client, query, headers, code, fragment):
    before = requests_total(client, 400)
    response = client.post(f"/upscale?{query}", content=PNG, headers=RAW | headers)
    assert_error(response, 400, code, fragment)
    assert requests_total(client, 400) == before + 1


def test_undecodable_image_is_400(client):
    assert_error(client.post("/upscale?scale=2", content=b"\x89PNG but not really", headers=RAW), 400, "invalid_image")
    assert_error(client.post("/upscale?scale=2", content=b"", headers=RAW), 400, "empty_body")


def test_multipart_without_image_field_is_400(client):
    response = client.post("/upscale?scale=2", files={"picture": ("in.png", PNG, "image/png")})
    assert_error(response, 400, "missing_image", "'image'")


# -- 413 ---------------------------------------------------------------------------------------------


def test_too_large_bodies_and_images_are_413():
    settings = fast_settings(max_body_bytes=2_000, max_input_pixels=30 * 30)
    with TestClient(make_app(settings)) as client:
        before = requests_total(client, 413)
        big = encode(random_image(60, 60))  # > 2000 bytes of noise
        assert_error(client.post("/upscale?scale=2", content=big, headers=RAW), 413, "body_too_large", "2000")

        def chunks():  # no Content-Length: the limit applies while streaming
            for start in range(0, len(big), 500):
                yield big[start : start + 500]

        assert_error(client.post("/upscale?scale=2", content=chunks(), headers=RAW), 413, "body_too_large")
        wide = encode(Image.new("RGB", (200, 8), (30, 60, 90)))  # a small file with too many pixels
        assert len(wide) < 2_000
        assert_error(client.post("/upscale?scale=2", content=wide, headers=RAW), 413, "input_too_large", "1600")
        assert requests_total(client, 413) == before + 3


# -- 415 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/gif", "text/plain", "application/json", None])
def test_unsupported_content_types_are_415(client, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/upscale?scale=2", content=PNG, headers=headers)
    assert_error(response, 415, "unsupported_media_type", "image/png")


def test_image_bytes_in_a_refused_format_are_415(client):
    gif = encode(random_image(8, 8), "GIF")
    assert_error(client.post("/upscale?scale=2", content=gif, headers=RAW), 415, "unsupported_format", "GIF")
    response = client.post("/upscale?scale=2", files={"image": ("in.gif", gif, "image/gif")})
    assert_error(response, 415, "unsupported_media_type")


# -- 422 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "code", "fragment"),
    [
        ("scale=1.0", {}, "scale_out_of_range", "greater than 1.0 and at most 8.0, got 1.0"),
        ("scale=12.5", {}, "scale_out_of_range", "got 12.5"),
        ("scale=2&scale_w=0.5", {}, "scale_out_of_range", "scale_w"),
        ("scale=2&format=gif", {}, "unsupported_output_format", "got 'gif'"),
        ("scale=2&format=jpeg&quality=101", {}, "invalid_quality", "between 1 and 100"),
        ("scale=2", {"x-anysr-budget": "gflops=0.000001"}, "budget_too_small", "narrowest width (0.5)"),
    ],
)
def test_out_of_range_values_are_422(client, query, headers, code, fragment):
    before = requests_total(client, 422)
    response = client.post(f"/upscale?{query}", content=PNG, headers=RAW | headers)
    assert_error(response, 422, code, fragment)
    assert requests_total(client, 422) == before + 1


def test_output_too_large_and_unserved_width_are_422():
    settings = fast_settings(max_output_pixels=2_000, max_input_pixels=1_000, widths="0.5,1.0")
    with TestClient(make_app(settings)) as client:
        response = client.post("/upscale?scale=3", content=PNG, headers=RAW)
        assert_error(response, 422, "output_too_large", "at most 2000")
        response = client.post("/upscale?scale=1.5", content=PNG, headers=RAW | {"x-anysr-budget": "width=0.7"})
        assert_error(response, 422, "width_not_served", "(0.5, 1.0)")


# -- 429, 503, 504 -----------------------------------------------------------------------------------


class GatedRunner:
    """Wraps a real runner; batches wait for ``gate`` (warm-up does not), so tests can hold work in flight."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.inner = ModelRunner(build_model(TINY_SPEC), RunnerConfig())
        self.model, self.device, self.precision = self.inner.model, self.inner.device, self.inner.precision
        self.precision_reason = self.inner.precision_reason
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches = 0

    def warm_up(self, widths, lr_size, scale=2.0):
        return self.inner.warm_up(widths, lr_size, scale)

    def run_batch(self, jobs):
        self.batches += 1
        self.entered.set()
        self.gate.wait(10)
        return self.inner.run_batch(jobs)


def post_in_background(client: TestClient, results: list, **kwargs) -> threading.Thread:
    def send():
        results.append(client.post("/upscale?scale=2", content=PNG, headers=RAW, **kwargs))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_a_client_over_its_in_flight_cap_gets_429():
    with TestClient(make_app(fast_settings(max_requests_per_client=1))) as client:
        before = requests_total(client, 429)
        with client.app.state.lifecycle.admit("testclient"):  # one request of this client already in flight
            response = client.post("/upscale?scale=2", content=PNG, headers=RAW)
        assert_error(response, 429, "too_many_requests", "at most 1")
        assert response.headers["retry-after"] == "1"
        assert requests_total(client, 429) == before + 1
        assert client.post("/upscale?scale=2", content=PNG, headers=RAW).status_code == 200


def test_full_queue_is_503_with_retry_after():
    runner = GatedRunner()
    with TestClient(make_app(fast_settings(max_queue_tiles=1, tile_size=64), runner=runner)) as client:
        results: list = []
        thread = post_in_background(client, results)
        assert runner.entered.wait(10)  # the first request's only tile is running
        response = client.post("/upscale?scale=2", content=PNG, headers=RAW)
        runner.gate.set()
        thread.join(10)
        assert_error(response, 503, "queue_full", "at most 1 tiles")
        assert int(response.headers["retry-after"]) >= 1
        assert results[0].status_code == 200


def test_a_deadline_too_short_even_for_an_idle_server_is_422_at_once(client):
    response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-anysr-deadline-ms": "0.001"})
    assert_error(response, 422, "request_too_costly", "even on an idle server", "deadline allows 0.000 s")


class SlowDeviceRunner(GatedRunner):
    """A tiny model on a slow device: batches take their FLOPs / ``flops_per_s`` (warm-up reports that rate),
    so a large image predicts minutes of work while a small one still takes milliseconds."""

    def __init__(self, flops_per_s: float) -> None:
        super().__init__()
        self.gate.set()
        self.flops_per_s = flops_per_s

    def warm_up(self, widths, lr_size, scale=2.0):
        self.inner.warm_up(widths, lr_size, scale)
        return dict.fromkeys(widths, self.flops_per_s)

    def run_batch(self, jobs):
        time.sleep(sum(job.flops for job in jobs) / self.flops_per_s)
        return super().run_batch(jobs)


def one_bit_png(side: int) -> bytes:
    image = Image.new("1", (side, side), 0)
    image.putpixel((side // 2, side // 2), 1)
    return encode(image)


def test_a_tiny_file_of_minutes_of_work_is_refused_at_once_and_a_small_request_is_unaffected():
    """The issue's case: a 2048x2048 1-bit PNG of a few kB at x2 (64 tiles with the default tile size)."""
    big = one_bit_png(2048)
    assert len(big) < 4_000
    settings = fast_settings(tile_size=256)
    plan = plan_tiles((2048, 2048), (4096, 4096), 256, TINY_META.receptive_radius)
    assert plan.count == 64
    runner = SlowDeviceRunner(flops_per_s=plan.flops(TINY_META, 0.5) / 200)  # ~200 s at the narrowest width
    with TestClient(make_app(settings, runner=runner)) as client:
        results: list = []

        def small():
            results.append(client.post("/upscale?scale=2", content=PNG, headers=RAW))

        thread = threading.Thread(target=small)
        started = time.perf_counter()
        thread.start()
        response = client.post("/upscale?scale=2", content=big, headers=RAW)
        answered_s = time.perf_counter() - started
        thread.join(30)
        assert_error(response, 422, "request_too_costly", "idle server", "request timeout allows")
        assert answered_s < 1.0
        assert results[0].status_code == 200
        assert runner.batches == 1  # the small request's tile; none of the big one's was queued


def test_a_deadline_unreachable_because_of_the_load_is_503_naming_both_times():
    runner = GatedRunner()
    with TestClient(make_app(fast_settings(tile_size=64), runner=runner)) as client:
        service = client.app.state.service
        for width in service.policy.widths:  # 20x24 at x2 costs about 0.5 s at any width
            service.throughput.seed(width, service.flops_table(service.plan((20, 24), (40, 48)))[width] / 0.5)
        results: list = []
        thread = post_in_background(client, results)
        assert runner.entered.wait(10)  # about 0.5 s of work is on the device
        response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-anysr-deadline-ms": "800"})
        runner.gate.set()
        thread.join(10)
        assert_error(response, 503, "deadline_unreachable", "0.800 s cannot be met", "queued work")
        assert int(response.headers["retry-after"]) >= 1
        assert results[0].status_code == 200


def test_draining_refuses_new_work_with_503():
    with TestClient(make_app()) as client:
        client.app.state.lifecycle.begin_drain()
        assert_error(client.post("/upscale?scale=2", content=PNG, headers=RAW), 503, "draining")
        assert_error(client.get("/readyz"), 503, "draining")


def test_before_start_up_the_service_is_503():
    client = TestClient(make_app())  # not entered: the lifespan has not run
    assert_error(client.post("/upscale?scale=2", content=PNG, headers=RAW), 503, "not_ready")


def test_timeout_is_504_and_queued_tiles_are_dropped():
    runner = GatedRunner()
    settings = fast_settings(request_timeout_s=0.3, tile_size=64, max_batch_tiles=1)
    with TestClient(make_app(settings, runner=runner)) as client:
        registry = client.app.state.metrics.registry
        results: list = []
        thread = post_in_background(client, results)
        assert runner.entered.wait(10)  # request 1's tile holds the device
        response = client.post("/upscale?scale=2", content=PNG, headers=RAW)  # its tile waits, then times out
        assert_error(response, 504, "timeout", "dropped")
        runner.gate.set()
        thread.join(10)
        assert results[0].status_code == 504  # request 1 also exceeded 0.3 s while gated
        deadline = time.monotonic() + 5
        while registry.get_sample_value("anysr_tiles_dropped_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert registry.get_sample_value("anysr_tiles_dropped_total") == 1
        assert runner.batches == 1  # the dropped tile never ran
        assert requests_total(client, 504) == 2


def test_unexpected_errors_are_a_json_500_without_internals():
    class BrokenRunner(GatedRunner):
        def run_batch(self, jobs):
            raise RuntimeError("secret internal detail")

    with TestClient(make_app(runner=BrokenRunner()), raise_server_exceptions=False) as client:
        response = client.post("/upscale?scale=2", content=PNG, headers=RAW | {"x-request-id": "r-500"})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal"
        assert "r-500" in response.json()["error"]["message"]
        assert "secret" not in response.text
        assert requests_total(client, 500) == 1


def test_unknown_routes_use_the_error_shape(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/upscale"), 405, "method_not_allowed")
