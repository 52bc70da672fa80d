"""GET /v1/model: description, FLOPs per width for a size, validation, the untrained label."""

from __future__ import annotations

import pytest
import torch

from models import TINY_SPEC, build_model, count_flops
from server.model_source import untrained_info
from server.tiling import plan_tiles
from tests.server.helpers import TINY_META, TestClient, fast_settings, make_app


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app()) as test_client:
        yield test_client


def test_describes_model_and_serving(client):
    body = client.get("/v1/model").json()
    assert body["widths"] == [0.5, 0.7, 0.9, 1.0]
    assert body["served_widths"] == [0.5, 0.7, 0.9, 1.0]
    assert body["scale_groups"] == [
        {"max_scale": 1.75, "width": 0.5},
        {"max_scale": 2.55, "width": 0.7},
        {"max_scale": 3.25, "width": 0.9},
        {"max_scale": None, "width": 1.0},
    ]
    assert body["parameters"] == sum(p.numel() for p in build_model(TINY_SPEC).parameters())
    assert body["spec"]["encoder"]["args"]["n_feats"] == TINY_SPEC.encoder.args["n_feats"]
    assert body["untrained"] is False and body["warning"] is None
    assert body["policy"] == {"mode": "adaptive", "fixed_width": None}
    assert body["tiling"] == {
        "whole_image": False,
        "tile_size": 16,
        "halo": TINY_META.receptive_radius,
        "alignment": 1,
    }
    assert body["name"] == "anysr-edsr-baseline-liif"
    assert body["parts"] == {
        "encoder": "edsr-baseline",
        "decoder": "liif",
        "global_decoder": False,
        "receptive_radius": TINY_META.receptive_radius,
    }
    assert body["device"] == "cpu" and body["precision"] == "fp32"
    assert set(body["throughput_flops_per_s"]) == {"0.5", "0.7", "0.9", "1.0"}
    assert body["scale_range"] == {"min_exclusive": 1.0, "max": 8.0}


def test_flops_per_width_for_a_given_size(client):
    body = client.get("/v1/model", params={"size": "40x50", "scale": 3}).json()
    flops = body["flops"]
    assert flops["input_size"] == [40, 50] and flops["output_size"] == [120, 150]
    plan = plan_tiles((40, 50), (120, 150), tile_size=16, halo=TINY_META.receptive_radius)
    assert flops["tiles"] == plan.count
    for width in (0.5, 0.7, 0.9, 1.0):
        entry = flops["per_width"][f"{width:.1f}"]
        whole = count_flops(TINY_META, (40, 50), (120, 150), width)
        assert entry["flops"] == plan.flops(TINY_META, width)
        assert entry["flops_whole_image"] == whole.total
        assert entry["encoder_flops_whole_image"] + entry["decoder_flops_whole_image"] == whole.total


@pytest.mark.parametrize(("params", "status"), [({"size": "40"}, 400), ({"size": "0x4"}, 400), ({"scale": 20}, 422)])
def test_bad_queries(client, params, status):
    response = client.get("/v1/model", params=params)
    assert response.status_code == status
    assert "error" in response.json()


def test_untrained_models_are_labelled():
    torch.manual_seed(0)
    model = build_model(TINY_SPEC)
    with TestClient(make_app(model=model, model_info=untrained_info(model))) as client:
        body = client.get("/v1/model").json()
    assert body["untrained"] is True
    assert "UNTRAINED" in body["warning"]
    assert body["sha256"] is None


def test_per_axis_scales_and_the_request_limits(client):
    body = client.get("/v1/model", params={"size": "40x50", "scale_h": 2, "scale_w": 3}).json()
    assert body["flops"]["output_size"] == [80, 150]
    plan = plan_tiles((40, 50), (80, 150), tile_size=16, halo=TINY_META.receptive_radius)
    assert body["flops"]["per_width"]["1.0"]["flops"] == plan.flops(TINY_META, 1.0)
    settings = fast_settings()
    assert body["limits"] == {
        "max_body_bytes": settings.max_body_bytes,
        "max_input_pixels": settings.max_input_pixels,
        "max_output_pixels": settings.max_output_pixels,
        "input_formats": list(settings.input_formats),
        "output_formats": list(settings.output_formats),
        "default_quality": settings.default_quality,
        "request_timeout_s": settings.request_timeout_s,
    }


def test_limits_follow_the_settings():
    settings = fast_settings(output_formats="png,webp", max_input_pixels=10_000)
    with TestClient(make_app(settings)) as client:
        limits = client.get("/v1/model").json()["limits"]
    assert limits["output_formats"] == ["png", "webp"] and limits["max_input_pixels"] == 10_000
