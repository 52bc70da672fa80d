"""/healthz and /readyz through start-up, service and drain."""

from __future__ import annotations

from tests.server.helpers import TestClient, make_app


def test_liveness_and_readiness_lifecycle():
    app = make_app()
    idle = TestClient(app)
    assert idle.get("/healthz").json() == {"status": "alive"}
    response = idle.get("/readyz")
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        assert app.state.metrics.registry.get_sample_value("anysr_ready") == 1
        app.state.lifecycle.begin_drain()
        response = client.get("/readyz")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200  # alive while draining
    assert app.state.metrics.registry.get_sample_value("anysr_ready") == 0
