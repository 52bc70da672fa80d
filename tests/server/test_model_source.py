"""server/model_source.py: serving a weights file, refusing a missing one, labelling random weights."""

from __future__ import annotations

import pytest
import torch

from models import TINY_SPEC, ModelSpec, build_model
from models.checkpoint import save_checkpoint
from models.registry import resolve_spec
from server.app import create_app
from server.model_source import WeightsNotFound, load_model
from tests.server.helpers import TestClient, encode, fast_settings, random_image


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    info = save_checkpoint(path, build_model(TINY_SPEC), {"steps": 7})
    return path, info


def test_loads_a_checkpoint_with_its_spec_and_hash(tiny_weights):
    path, saved = tiny_weights
    model, info = load_model(path, allow_untrained=False)
    assert model.spec == resolve_spec(TINY_SPEC)
    assert info.sha256 == saved.sha256 and info.parameters == saved.parameter_count
    assert info.training == {"steps": 7} and not info.untrained


def test_missing_weights_are_refused_unless_untrained_is_allowed(tmp_path):
    with pytest.raises(WeightsNotFound, match="--allow-untrained"):
        load_model(tmp_path / "absent.safetensors", allow_untrained=False)
    model, info = load_model(tmp_path / "absent.safetensors", allow_untrained=True)
    assert info.untrained and info.sha256 is None
    assert model.spec == resolve_spec(ModelSpec())


def test_the_app_serves_a_weights_file(tiny_weights):
    path, saved = tiny_weights
    with TestClient(create_app(fast_settings(weights=path))) as client:
        body = client.get("/v1/model").json()
        assert body["sha256"] == saved.sha256 and body["source"] == str(path)
        assert body["training"] == {"steps": 7} and body["untrained"] is False
        response = client.post(
            "/upscale?scale=2", content=encode(random_image(12, 12)), headers={"content-type": "image/png"}
        )
        assert response.status_code == 200
