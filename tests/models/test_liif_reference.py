"""models/decoders/liif_reference.py: the original-order LIIF really is the original order, and matches the model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.anysr import AnySR
from models.decoders.liif_reference import reference_forward, reference_query_rgb, reference_upscale
from models.spec import TINY_SPEC
from models.widths import WIDTHS

MODES = {"slim": TINY_SPEC, "paper": TINY_SPEC.replace_args(decoder={"slim": False})}


@pytest.mark.parametrize("mode", MODES)
def test_reference_forward_matches_the_model_at_every_width(
    tiny_model_factory: Callable[..., AnySR], mode: str
) -> None:
    model = tiny_model_factory(MODES[mode])
    lr = torch.rand(2, 3, 5, 7)
    coord = torch.rand(2, 300, 2) * 2 - 1
    cell = torch.rand(2, 300, 2) * 0.3 + 0.01
    scales = torch.tensor([[1.3, 2.7], [5.0, 5.0]])
    with torch.no_grad():
        for width in WIDTHS:
            ours = model(lr, coord, cell, width, scales)
            reference = reference_forward(model, lr, coord, cell, width, scales)
            torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_reference_upscale_matches_the_model(tiny_model: AnySR, width: float) -> None:
    lr = torch.rand(2, 3, 6, 5)
    ours = tiny_model.upscale(lr, (13, 9), width)
    reference = reference_upscale(tiny_model, lr, (13, 9), width, query_chunk=50)
    assert reference.shape == (2, 3, 13, 9)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_reference_runs_the_whole_mlp_four_times_per_query(
    tiny_model_factory: Callable[..., AnySR], mode: str, width: float
) -> None:
    """What makes it the slow baseline: (C·9 + 4)-input MLP passes, 4 per query, nothing precomputed."""
    spec = MODES[mode]
    decoder = tiny_model_factory(spec).decoder
    queries = 37
    features = torch.randn(1, decoder.feat_dim // 9, 4, 5)
    coord = torch.rand(1, queries, 2) * 2 - 1
    cell = torch.full((1, queries, 2), 0.1)
    sizes = [decoder.feat_dim + 4, *decoder.hidden_sizes(width), 3]
    mlp_macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference_query_rgb(decoder, features, coord, cell, width)
    assert counter.get_total_flops() == 2 * 4 * queries * mlp_macs
