"""models/decoders/liif.py: the reordered LIIF decoder computes LIIF's function, at every width, in both modes."""

from __future__ import annotations

import pytest
import torch

from models.anysr import build_model
from models.coords import make_cell, make_coord
from models.decoders.liif import LIIFDecoder
from models.decoders.liif_reference import reference_query_rgb
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

#: The LR image and scale ``prepare`` takes; LIIF's decoding reads neither.
LR = torch.zeros(1, 3, 1, 1)
SCALE = torch.ones(1, 2)
SPECS = {
    "tiny-slim": TINY_SPEC,
    "tiny-paper": TINY_SPEC.replace_args(decoder={"slim": False}),
    "edsr-slim": ModelSpec(),
    "edsr-paper": ModelSpec().replace_args(decoder={"slim": False}),
}


def make_decoder(spec: ModelSpec) -> LIIFDecoder:
    """A decoder with non-zero random biases (default init leaves them small) so every term matters."""
    decoder = build_model(spec).decoder
    assert isinstance(decoder, LIIFDecoder)
    with torch.no_grad():
        for layer in decoder.mlp.layers:
            layer.bias.uniform_(-0.2, 0.2)
    return decoder


def queries(height: int, width: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random points (some next to the border), plus whole output grids at non-integer and integer scales.

    Integer scales matter: with an odd scale, half the shifted grid points fall on LR cell borders, where
    only LIIF's epsilon shift decides which neighbour is picked.
    """
    random_coord = torch.rand(batch, 200, 2) * 2 - 1
    random_coord[:, :4] = torch.tensor([[-0.9999, -0.9999], [0.9999, 0.9999], [-0.9999, 0.9999], [0.0, 0.0]])
    coords = [random_coord]
    cells = [torch.rand(batch, 200, 2) * 0.5 + 0.01]
    for scale_h, scale_w in [(2.3, 1.7), (2, 2), (3, 3), (1, 4)]:
        grid_h, grid_w = round(height * scale_h), round(width * scale_w)
        coords.append(make_coord(grid_h, grid_w)[None].expand(batch, -1, -1))
        cells.append(make_cell(grid_h, grid_w, grid_h * grid_w)[None].expand(batch, -1, -1))
    return torch.cat(coords, dim=1), torch.cat(cells, dim=1)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_decoder_matches_reference_liif(spec_name: str, width: float) -> None:
    spec = SPECS[spec_name]
    decoder = make_decoder(spec)
    features = torch.randn(2, decoder.feat_dim // 9, 5, 6)
    coord, cell = queries(5, 6, batch=2)
    with torch.no_grad():
        ours = decoder.query_normalised(decoder.prepare(features, LR, width, SCALE), coord, cell, width)
        reference = reference_query_rgb(decoder, features, coord, cell, width)
    assert ours.shape == reference.shape == (2, coord.shape[1], 3)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_decoder_matches_reference_on_a_channels_last_projection() -> None:
    """The serving path may keep prepared features channels_last; the gather must not care."""
    decoder = make_decoder(TINY_SPEC)
    features = torch.randn(1, decoder.feat_dim // 9, 4, 9)
    coord, cell = queries(4, 9, batch=1)
    with torch.no_grad():
        prepared = decoder.prepare(features, LR, 0.7, SCALE).contiguous(memory_format=torch.channels_last)
        ours = decoder.query_normalised(prepared, coord, cell, 0.7)
        reference = reference_query_rgb(decoder, features, coord, cell, 0.7)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("spec_name", "expected"),
    [
        ("edsr-slim", {0.5: 128, 0.7: 179, 0.9: 230, 1.0: 256}),
        ("edsr-paper", {0.5: 256, 0.7: 256, 0.9: 256, 1.0: 256}),
    ],
)
def test_hidden_sizes(spec_name: str, expected: dict[float, int]) -> None:
    for width, size in expected.items():
        assert make_decoder(SPECS[spec_name]).hidden_sizes(width) == [size] * 4


def test_decoder_macs_are_liifs_minus_the_work_moved_to_lr_pixels() -> None:
    """LIIF runs 580 → 256 → 256 → 256 → 256 → 3 four times per output pixel: 1.383 M MACs (method notes).

    We run the 576 feature inputs of the first layer once per LR pixel instead, and (on an output grid)
    its 4 geometry inputs per output row and column; the other layers stay per query.
    """
    with torch.device("meta"):
        decoder = build_model(ModelSpec()).decoder

    def split(width: float) -> tuple[int, int]:
        """(MACs per LR pixel, per output pixel), from two sizes: LR pixels and output pixels vary apart."""
        base = decoder.macs((1, 1), (1, 1), width)
        per_output = decoder.macs((1, 1), (1, 2), width) - base
        return base - per_output, per_output

    per_lr_pixel, per_output_pixel = split(1.0)
    liif_per_query = 580 * 256 + 3 * 256 * 256 + 256 * 3
    assert 4 * liif_per_query == 1_383_424
    assert per_lr_pixel == 576 * 256
    assert per_output_pixel == 4 * (liif_per_query - 580 * 256)
    slim_per_lr_pixel, slim_per_output_pixel = split(0.5)
    assert slim_per_lr_pixel == 576 * 128
    assert slim_per_output_pixel == 4 * (3 * 128 * 128 + 128 * 3)
