"""GET /metrics: parseable exposition whose counters move with traffic."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import TestClient, encode, make_app, random_image


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_move_with_requests():
    with TestClient(make_app()) as client:
        before = scrape(client)
        png = encode(random_image(20, 24))
        response = client.post("/upscale?scale=2", content=png, headers={"content-type": "image/png"})
        assert response.status_code == 200
        client.post("/upscale?scale=99", content=png, headers={"content-type": "image/png"})
        after = scrape(client)
    width = response.headers["x-anysr-width"]
    reason = response.headers["x-anysr-reason"]

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("anysr_requests_total", status="200") == 1
    assert delta("anysr_requests_total", status="422") == 1
    assert delta("anysr_width_selected_total", width=width, reason=reason) == 1
    assert delta("anysr_flops_total", width=width) == int(response.headers["x-anysr-flops"])
    assert delta("anysr_request_duration_seconds_count", width=width) == 1
    assert delta("anysr_queue_wait_seconds_count", width=width) == int(response.headers["x-anysr-tiles"])
    assert delta("anysr_batch_size_tiles_count") >= 1
    assert after[("anysr_in_flight_requests", ())] == 0
    assert after[("anysr_queue_depth_tiles", ())] == 0
    assert 0.0 <= after[("anysr_cpu_utilisation_ratio", ())] <= 1.0
    assert after[("anysr_throughput_flops_per_second", (("width", width),))] > 0
