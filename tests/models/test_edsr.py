"""models/encoders/edsr.py: the EDSR-baseline AnySR encoder and its MAC counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models.anysr import AnySR, build_model
from models.encoders.edsr import EDSRBaselineEncoder
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

SPEC_VARIANTS = {
    "tiny": TINY_SPEC,
    "no-ase": TINY_SPEC.replace_args(encoder={"ase": False}),
    "no-interweave": TINY_SPEC.replace_args(encoder={"interweave": False}),
}


@pytest.mark.parametrize("variant", SPEC_VARIANTS)
@pytest.mark.parametrize("width", WIDTHS)
def test_features_keep_full_channels_at_every_width(
    tiny_model_factory: Callable[..., AnySR], variant: str, width: float
) -> None:
    """Between blocks features stay n_feats wide, so the decoder never needs to know the width."""
    spec = SPEC_VARIANTS[variant]
    encoder = tiny_model_factory(spec).encoder
    lr = torch.rand(2, 3, 5, 7)
    features = encoder(lr, width, torch.tensor([[1.3, 2.7], [2.0, 2.0]]))
    assert features.shape == (2, encoder.out_dim, 5, 7)
    assert torch.isfinite(features).all()


def test_each_sample_uses_its_own_scale(tiny_model: AnySR) -> None:
    encoder = tiny_model.encoder
    lr = torch.rand(2, 3, 6, 6)
    scales = torch.tensor([[1.2, 1.2], [3.7, 2.9]])
    together = encoder(lr, 0.7, scales)
    for index in range(2):
        alone = encoder(lr[index : index + 1], 0.7, scales[index : index + 1])
        torch.testing.assert_close(together[index : index + 1], alone)


def test_scale_changes_features_only_with_ase(tiny_model_factory: Callable[..., AnySR]) -> None:
    lr = torch.rand(1, 3, 6, 6)
    small, large = torch.tensor([[1.2, 1.2]]), torch.tensor([[3.8, 3.8]])
    with_ase = tiny_model_factory().encoder
    assert not torch.allclose(with_ase(lr, 1.0, small), with_ase(lr, 1.0, large))
    without_ase = tiny_model_factory(TINY_SPEC.replace_args(encoder={"ase": False})).encoder
    assert torch.equal(without_ase(lr, 1.0, small), without_ase(lr, 1.0, large))


def test_narrower_widths_give_different_features(tiny_model: AnySR) -> None:
    lr = torch.rand(1, 3, 6, 6)
    scale = torch.tensor([[2.0, 2.0]])
    outputs = [tiny_model.encoder(lr, width, scale) for width in WIDTHS]
    for narrow, wide in zip(outputs[:-1], outputs[1:], strict=True):
        assert not torch.allclose(narrow, wide)


def meta_encoder(spec: ModelSpec) -> EDSRBaselineEncoder:
    with torch.device("meta"):
        encoder = build_model(spec).encoder
    assert isinstance(encoder, EDSRBaselineEncoder)
    return encoder


def macs_per_lr_pixel(encoder: EDSRBaselineEncoder, width: float) -> int:
    return encoder.macs((2, 1), width) - encoder.macs((1, 1), width)


def macs_per_image(encoder: EDSRBaselineEncoder, width: float) -> int:
    return encoder.macs((1, 1), width) - macs_per_lr_pixel(encoder, width)


@pytest.mark.parametrize(("width", "mega_macs"), [(0.5, 0.628), (0.7, 0.850), (0.9, 1.089), (1.0, 1.218)])
def test_edsr_baseline_macs_per_lr_pixel_match_the_method_notes(width: float, mega_macs: float) -> None:
    assert macs_per_lr_pixel(meta_encoder(ModelSpec()), width) / 1e6 == pytest.approx(mega_macs, abs=5e-4)


def test_ase_macs_are_per_image_and_follow_the_input_length() -> None:
    spec = ModelSpec()
    # 16 blocks × (W1: 72 → 128, W2: 128 → 64) at full width; (36 → 128, 128 → 32) at 0.5.
    assert macs_per_image(meta_encoder(spec), 1.0) == 16 * (72 * 128 + 128 * 64)
    assert macs_per_image(meta_encoder(spec), 0.5) == 16 * (36 * 128 + 128 * 32)
    no_interweave = meta_encoder(spec.replace_args(encoder={"interweave": False}))
    assert macs_per_image(no_interweave, 1.0) == 16 * (66 * 128 + 128 * 64)
    assert macs_per_image(meta_encoder(spec.replace_args(encoder={"ase": False})), 1.0) == 0


def test_receptive_radius_counts_every_stacked_convolution() -> None:
    # Head, 2 per block, tail.
    assert meta_encoder(ModelSpec()).receptive_radius == 2 + 2 * 16
    assert meta_encoder(TINY_SPEC).receptive_radius == 2 + 2 * 2
