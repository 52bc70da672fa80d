"""The server serves whatever model it is given: every registered encoder × decoder, by its own widths.

Nothing in server/ names a part (tests/server/test_imports.py); this shows the other half: a model of any
registered parts loads from its weights file, describes itself in /v1/model, and answers upscales whose
FLOPs header is what its plan runs, at widths of its own width set, tiled or (global decoder) whole.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from models.anysr import build_model
from models.checkpoint import save_checkpoint
from models.registry import entries, tiny_spec
from server.tiling import plan_for_model
from tests.server.helpers import TestClient, create_app, encode, fast_settings, random_image

COMBOS = list(itertools.product([e.name for e in entries("encoder")], [d.name for d in entries("decoder")]))
IDS = [f"{encoder}+{decoder}" for encoder, decoder in COMBOS]
RAW = {"content-type": "image/png"}


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_a_weights_file_of_any_parts_is_served_by_its_own_widths(combo: tuple[str, str], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_spec(*combo))
    weights = tmp_path / "model.safetensors"
    save_checkpoint(weights, model, {"combo": list(combo)})
    settings = fast_settings(weights=weights, max_whole_image_pixels=150 * 150)
    with TestClient(create_app(settings)) as client:
        described = client.get("/v1/model").json()
        assert described["parts"]["encoder"] == combo[0] and described["parts"]["decoder"] == combo[1]
        assert described["name"] == f"anysr-{combo[0]}-{combo[1]}"
        assert described["widths"] == list(model.widths) == described["served_widths"]
        assert described["tiling"]["whole_image"] is model.is_global
        assert described["tiling"]["halo"] == model.receptive_radius

        png = encode(random_image(56, 60, seed=3))
        for width in model.widths:
            response = client.post(
                "/upscale?scale=2.5", content=png, headers=RAW | {"x-anysr-budget": f"width={width}"}
            )
            assert response.status_code == 200, response.text
            assert float(response.headers["x-anysr-width"]) == width
            plan = plan_for_model(model, (56, 60), (140, 150), tile_size=16)
            assert int(response.headers["x-anysr-flops"]) == plan.flops(model, width)
            assert int(response.headers["x-anysr-tiles"]) == plan.count
            assert (plan.count == 1) if model.is_global else (plan.count > 1)

        # A width of another model's set is refused as a bad header, naming this model's widths.
        foreign = next(width for width in (0.5, 0.8) if width not in model.widths)
        refused = client.post("/upscale?scale=2", content=png, headers=RAW | {"x-anysr-budget": f"width={foreign}"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_budget"
        if model.is_global:
            too_big = client.post("/upscale?scale=3", content=png, headers=RAW)  # 168 x 180 > 150 x 150
            assert too_big.status_code == 422 and "global" in too_big.json()["message"]


def test_served_widths_must_be_the_models_own(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "rdn.safetensors"
    save_checkpoint(weights, build_model(tiny_spec("rdn", "liif")))
    app = create_app(fast_settings(weights=weights, widths=(0.5, 1.0)))
    with pytest.raises(ValueError, match=r"served width 0.5 is not one of this model's widths \(0.7, 0.8, 0.9, 1.0\)"):
        with TestClient(app):
            pass
