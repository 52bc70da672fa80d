"""models/flops.py: the analytic FLOPs model against a measured count, and the slim decoder's saving."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.anysr import AnySR, build_model
from models.flops import FLOPS_PER_MAC, count_flops
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

SPECS = {
    "slim": TINY_SPEC,
    "paper": TINY_SPEC.replace_args(decoder={"slim": False}),
    "no-interweave": TINY_SPEC.replace_args(encoder={"interweave": False}),
    "no-ase": TINY_SPEC.replace_args(encoder={"ase": False}),
}
#: Non-square LR and output sizes (scale 1.8 × 2.29).
LR_SIZE = (5, 7)
OUT_SIZE = (9, 16)


def measured_flops(function: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def meta_model(spec: ModelSpec) -> AnySR:
    """The model on the meta device: the FLOPs model needs only its parts' configs."""
    with torch.device("meta"):
        return build_model(spec)


def assert_within_2_percent(predicted: int, measured: int) -> None:
    assert measured > 0
    assert abs(predicted - measured) <= 0.02 * measured, f"predicted {predicted}, measured {measured}"


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("width", WIDTHS)
def test_flops_model_matches_flop_counter(
    tiny_model_factory: Callable[..., AnySR], spec_name: str, width: float
) -> None:
    spec = SPECS[spec_name]
    model = tiny_model_factory(spec)
    lr = torch.rand(2, 3, *LR_SIZE)
    predicted = count_flops(model, LR_SIZE, OUT_SIZE, width, images=2)
    scales = torch.tensor([[1.8, 16 / 7]] * 2)
    with torch.no_grad():
        encoder = measured_flops(lambda: model.encoder(lr, width, scales))
    total = measured_flops(lambda: model.upscale(lr, OUT_SIZE, width, query_chunk=50))
    assert_within_2_percent(predicted.encoder, encoder)
    assert_within_2_percent(predicted.total, total)


def test_breakdown_total_is_encoder_plus_decoder_and_scales_with_images() -> None:
    one = count_flops(meta_model(TINY_SPEC), LR_SIZE, OUT_SIZE, 0.7)
    three = count_flops(meta_model(TINY_SPEC), LR_SIZE, OUT_SIZE, 0.7, images=3)
    assert one.total == one.encoder + one.decoder
    assert (three.encoder, three.decoder) == (3 * one.encoder, 3 * one.decoder)
    assert one.encoder % FLOPS_PER_MAC == 0 and one.decoder % FLOPS_PER_MAC == 0


@pytest.mark.parametrize("slim_decoder", [True, False])
def test_flops_grow_with_width_and_output_size(slim_decoder: bool) -> None:
    spec = ModelSpec().replace_args(decoder={"slim": slim_decoder})
    totals = [count_flops(meta_model(spec), (64, 64), (96, 96), width).total for width in WIDTHS]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    assert count_flops(meta_model(spec), (64, 64), (128, 128), 0.5).total > totals[0]


def test_slim_decoder_makes_half_width_cost_under_45_percent_at_x1_5() -> None:
    """The product claim: at ×1.5 (64×64 LR), w = 0.5 costs ≤ 45% of w = 1.0 end to end (EDSR-baseline + LIIF).

    Paper mode slices only the encoder, so its saving is much smaller; the decoder dominates the cost.
    """
    slim = ModelSpec()
    ratio = (
        count_flops(meta_model(slim), (64, 64), (96, 96), 0.5).total
        / count_flops(meta_model(slim), (64, 64), (96, 96), 1.0).total
    )
    assert ratio <= 0.45
    paper = ModelSpec().replace_args(decoder={"slim": False})
    paper_ratio = (
        count_flops(meta_model(paper), (64, 64), (96, 96), 0.5).total
        / count_flops(meta_model(paper), (64, 64), (96, 96), 1.0).total
    )
    assert paper_ratio > 0.75
