"""models/decoders/liif_grid.py: whole-grid decoding computes LIIFDecoder.query's function on any grid, in any chunks."""

from __future__ import annotations

import pytest
import torch

from models.anysr import AnySR, build_model
from models.coords import make_coord
from models.decoders.liif import LIIFDecoder
from models.decoders.liif_grid import GridDecoder
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS

#: The LR image and scale ``prepare`` takes; LIIF's decoding reads neither.
LR = torch.zeros(1, 3, 1, 1)
SCALE = torch.ones(1, 2)
SPECS = {"slim": TINY_SPEC, "paper": TINY_SPEC.replace_args(decoder={"slim": False})}


def make_decoder(spec: ModelSpec) -> LIIFDecoder:
    """Random non-zero biases, so a bias dropped or added twice would show."""
    decoder = build_model(spec).decoder
    assert isinstance(decoder, LIIFDecoder)
    with torch.no_grad():
        for layer in decoder.mlp.layers:
            layer.bias.uniform_(-0.2, 0.2)
    return decoder


def grid_queries(ys: torch.Tensor, xs: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, H·W, 2) coordinates and cells :meth:`LIIFDecoder.query` takes for per-image grids."""
    batch, height, width = ys.shape[0], ys.shape[1], xs.shape[1]
    coord = torch.stack([ys[:, :, None].expand(-1, -1, width), xs[:, None, :].expand(-1, height, -1)], dim=-1)
    return coord.reshape(batch, height * width, 2), cell[:, None, :].expand(batch, height * width, 2)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_grid_decoding_equals_query_for_per_image_grids_in_any_chunks(spec_name: str, width: float) -> None:
    spec = SPECS[spec_name]
    decoder = make_decoder(spec)
    features = torch.randn(2, decoder.feat_dim // 9, 5, 6)
    # Image 0: a tile of a 2.3 × 1.7 upscale (offset rows/columns); image 1: an integer ×2 grid, where
    # shifted queries land exactly on cell borders and only LIIF's epsilon decides.
    ys = torch.stack([make_coord(19, 1)[3:13, 0], make_coord(10, 1)[:, 0]])
    xs = torch.stack([make_coord(13, 1)[:10, 0], make_coord(12, 1)[1:11, 0]])
    cell = torch.tensor([[2 / 19, 2 / 13], [2 / 10, 2 / 12]])
    coord, cells = grid_queries(ys, xs, cell)
    with torch.no_grad():
        prepared = decoder.prepare(features, LR, width, SCALE)
        expected = decoder.query(prepared, coord, cells, width).transpose(1, 2)
        grid = GridDecoder(decoder, prepared, ys, xs, cell, width)
        total = grid.queries
        assert total == 10 * 10
        whole = grid.decode(0, total)
        torch.testing.assert_close(whole, expected, rtol=0, atol=1e-5)
        # Chunks starting and ending mid-row, a chunk inside one row, single queries.
        for bounds in [(0, 7), (7, 33), (33, 35), (35, 99), (99, 100)]:
            torch.testing.assert_close(grid.decode(*bounds), expected[:, :, slice(*bounds)], rtol=0, atol=1e-5)


def test_grid_decoding_of_a_whole_image_matches_query_with_shared_coordinates() -> None:
    decoder = make_decoder(TINY_SPEC)
    features = torch.randn(1, decoder.feat_dim // 9, 4, 7)
    ys, xs = make_coord(12, 1)[:, 0], make_coord(21, 1)[:, 0]  # ×3: odd scale, border ties
    cell = torch.tensor([2 / 12, 2 / 21])
    coord, cells = grid_queries(ys[None], xs[None], cell[None])
    with torch.no_grad():
        prepared = decoder.prepare(features, LR, 0.7, SCALE)
        expected = decoder.query(prepared, coord, cells, 0.7).transpose(1, 2)
        out = torch.full((1, 3, 12 * 21), float("nan"))
        grid = GridDecoder(decoder, prepared, ys, xs, cell, 0.7)
        for start in range(0, 12 * 21, 50):
            grid.decode(start, min(start + 50, 12 * 21), out=out[:, :, start : start + 50])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_grid_decoder_rejects_mismatched_inputs() -> None:
    decoder = make_decoder(TINY_SPEC)
    features = torch.randn(2, decoder.feat_dim // 9, 3, 3)
    prepared = decoder.prepare(features, LR, 0.5, SCALE).detach()
    ys, xs, cell = make_coord(4, 1)[:, 0], make_coord(5, 1)[:, 0], torch.tensor([0.5, 0.4])
    with pytest.raises(ValueError, match="prepared has 16 channels but width 1.0 needs 32"):
        GridDecoder(decoder, prepared, ys, xs, cell, 1.0)
    with pytest.raises(ValueError, match=r"ys must have shape \(n,\) or \(2, n\), got \(3, 4\)"):
        GridDecoder(decoder, prepared, torch.zeros(3, 4), xs, cell, 0.5)
    grid = GridDecoder(decoder, prepared, ys, xs, cell, 0.5)
    with pytest.raises(ValueError, match=r"query range must lie within \[0, 20\], got 5:21"):
        grid.decode(5, 21)


def test_upscale_in_bf16_stays_close_to_fp32_and_rejects_other_dtypes(tiny_model: AnySR) -> None:
    lr = torch.rand(1, 3, 6, 5)
    fp32 = tiny_model.upscale(lr, (13, 9), 0.9)
    bf16 = tiny_model.upscale(lr, (13, 9), 0.9, compute_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert (bf16 - fp32).abs().max() < 0.03  # bf16 keeps 8 mantissa bits
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        tiny_model.upscale(lr, (13, 9), 0.9, compute_dtype=torch.float64)
    with pytest.raises(ValueError, match="output size must be at least 1x1, got 0x9"):
        tiny_model.upscale(lr, (0, 9), 0.9)
