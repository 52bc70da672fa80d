"""models/decoders/metasr.py: the reordered Meta-SR computes LIIF's MetaSR.query_rgb, on any points and any grid.

The reference below is that function written the plain way (3×3 unfold, nearest pick with grid_sample, the
whole MLP per query, the predicted filter applied with bmm), run in float64 so that any difference from the
decoder beyond ~1e-12 is a difference in the function, not rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.anysr import build_model
from models.coords import make_cell, make_coord
from models.decoders.metasr import MetaSRDecoder, MetaSRGridDecoding, _run_groups, _runs
from models.registry import entry, tiny_spec
from models.spec import ModelSpec
from models.widths import WIDTHS

#: The LR image and scale ``prepare`` takes; Meta-SR's decoding reads neither.
LR = torch.zeros(1, 3, 1, 1)
SCALE = torch.ones(1, 2)
TINY = tiny_spec("edsr-baseline", "metasr")
SPECS = {
    "tiny-slim": TINY,
    "tiny-full": TINY.replace_args(decoder={"slim": False}),
    "edsr-slim": ModelSpec.of("edsr-baseline", "metasr"),
}


def make_decoder(spec: ModelSpec) -> MetaSRDecoder:
    """Random non-zero biases (PyTorch leaves them small), so a bias dropped or applied twice would show."""
    decoder = build_model(spec).decoder
    assert isinstance(decoder, MetaSRDecoder)
    with torch.no_grad():
        for layer in decoder.mlp.layers:
            layer.bias.uniform_(-0.2, 0.2)
    return decoder


def reference_rgb(
    decoder: MetaSRDecoder, features: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, width: float
) -> torch.Tensor:
    """LIIF's MetaSR.query_rgb at ``width`` (hidden layer cut to the decoder's size), in [0, 1] units: (B, Q, 3)."""
    batch, channels, height, width_px = features.shape
    queries = coord.shape[1]
    unfolded = F.unfold(features, 3, padding=1).view(batch, channels * 9, height, width_px)
    # Each LR pixel's top-left corner as a 2-channel image, so grid_sample picks it like the features.
    corner_y = -1 + 2 * torch.arange(height, dtype=features.dtype) / height
    corner_x = -1 + 2 * torch.arange(width_px, dtype=features.dtype) / width_px
    corners = torch.stack(torch.meshgrid(corner_y, corner_x, indexing="ij")).expand(batch, 2, height, width_px)
    corner = coord - cell / 2
    grid = (corner + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6).flip(-1).unsqueeze(1)
    picked = F.grid_sample(unfolded, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    picked_corner = F.grid_sample(corners, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    rel = (corner - picked_corner) * torch.tensor([height / 2, width_px / 2], dtype=features.dtype)
    r_rev = cell[..., :1] * (height / 2)
    hidden = decoder.hidden_size(width)
    first, last = decoder.mlp.layers
    inputs = torch.cat([rel, r_rev], dim=-1).view(batch * queries, 3)
    activations = F.relu(F.linear(inputs, first.weight[:hidden], first.bias[:hidden]))
    filters = F.linear(activations, last.weight[:, :hidden], last.bias).view(batch * queries, channels * 9, 3)
    rgb = torch.bmm(picked.reshape(batch * queries, 1, channels * 9), filters).view(batch, queries, 3)
    return rgb * 0.5 + 0.5


def queries(height: int, width: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random points (some at the border, random non-square cells) and whole output grids.

    Integer scales matter: there every other corner lies exactly on an LR pixel border, where only the
    epsilon decides; ×1 puts every corner on one; 1 × 4 is non-square, where r_rev uses the row scale.
    """
    generator = torch.Generator().manual_seed(3)
    random_coord = torch.rand(batch, 200, 2, generator=generator) * 2 - 1
    random_coord[:, :4] = torch.tensor([[-0.9999, -0.9999], [0.9999, 0.9999], [-0.9999, 0.9999], [0.0, 0.0]])
    coords = [random_coord]
    cells = [torch.rand(batch, 200, 2, generator=generator) * 0.5 + 0.01]
    for scale_h, scale_w in [(2.3, 1.7), (1, 1), (2, 2), (3, 3), (1, 4)]:
        grid_h, grid_w = round(height * scale_h), round(width * scale_w)
        coords.append(make_coord(grid_h, grid_w)[None].expand(batch, -1, -1))
        cells.append(make_cell(grid_h, grid_w, grid_h * grid_w)[None].expand(batch, -1, -1))
    return torch.cat(coords, dim=1), torch.cat(cells, dim=1)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_query_computes_liifs_metasr_function(spec_name: str, width: float) -> None:
    decoder = make_decoder(SPECS[spec_name]).double()
    features = torch.randn(2, decoder.feat_dim // 9, 5, 6, dtype=torch.float64)
    coord, cell = queries(5, 6, batch=2)
    coord, cell = coord.double(), cell.double()
    with torch.no_grad():
        ours = decoder.query(decoder.prepare(features, LR, width, SCALE), coord, cell, width)
        expected = reference_rgb(decoder, features, coord, cell, width)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-11)


def test_training_gradients_equal_the_references() -> None:
    """The reordering is exact for training too: same gradients for the features and both layers."""
    decoder = make_decoder(TINY).double()
    features = torch.randn(1, decoder.feat_dim // 9, 4, 5, dtype=torch.float64, requires_grad=True)
    coord, cell = queries(4, 5, batch=1)
    coord, cell = coord.double(), cell.double()
    target = torch.rand(coord.shape[:2] + (3,), dtype=torch.float64)
    grads = []
    for run in (
        lambda: decoder.query(decoder.prepare(features, LR, 0.7, SCALE), coord, cell, 0.7),
        lambda: reference_rgb(decoder, features, coord, cell, 0.7),
    ):
        decoder.zero_grad()
        features.grad = None
        F.l1_loss(run(), target).backward()
        grads.append([features.grad.clone(), *(param.grad.clone() for param in decoder.parameters())])
    for ours, expected in zip(*grads, strict=True):
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-11)


def grid_queries(ys: torch.Tensor, xs: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (B, H·W, 2) coordinates and cells :meth:`MetaSRDecoder.query` takes for per-image grids."""
    batch, height, width = ys.shape[0], ys.shape[1], xs.shape[1]
    coord = torch.stack([ys[:, :, None].expand(-1, -1, width), xs[:, None, :].expand(-1, height, -1)], dim=-1)
    return coord.reshape(batch, height * width, 2), cell[:, None, :].expand(batch, height * width, 2)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("spec_name", ["tiny-slim", "tiny-full"])
def test_grid_decoding_equals_query_for_per_image_grids_in_any_chunks(spec_name: str, width: float) -> None:
    decoder = make_decoder(SPECS[spec_name])
    features = torch.randn(2, decoder.feat_dim // 9, 5, 6)
    # Image 0: a tile of a 2.3 × 1.7 upscale (offset rows and columns, runs of unequal lengths); image 1:
    # an integer ×2 grid, where every other corner lies exactly on an LR pixel border.
    ys = torch.stack([make_coord(19, 1)[3:13, 0], make_coord(10, 1)[:, 0]])
    xs = torch.stack([make_coord(13, 1)[:10, 0], make_coord(12, 1)[1:11, 0]])
    cell = torch.tensor([[2 / 19, 2 / 13], [2 / 10, 2 / 12]])
    coord, cells = grid_queries(ys, xs, cell)
    with torch.no_grad():
        prepared = decoder.prepare(features, LR, width, SCALE)
        expected = decoder.query(prepared, coord, cells, width).transpose(1, 2)
        grid = decoder.grid_decoder(prepared, ys, xs, cell, width)
        assert grid.queries == 10 * 10
        torch.testing.assert_close(grid.decode(0, grid.queries), expected, rtol=0, atol=1e-5)
        # Chunks starting and ending mid-row, inside one row, whole rows only, single queries.
        for bounds in [(0, 7), (7, 33), (33, 35), (35, 40), (40, 99), (99, 100)]:
            torch.testing.assert_close(grid.decode(*bounds), expected[:, :, slice(*bounds)], rtol=0, atol=1e-5)
        out = torch.full((2, 3, 100), float("nan"))
        for start in range(0, 100, 17):
            grid.decode(start, min(start + 17, 100), out=out[:, :, start : start + 17])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_grid_decoding_runs_the_same_macs_in_any_chunks_and_macs_counts_them() -> None:
    """Blocks are grouped per chunk, but every query is contracted exactly once, whatever the chunking."""
    decoder = make_decoder(TINY)
    features = torch.randn(1, decoder.feat_dim // 9, 7, 9)
    out_size = (16, 29)  # × 2.29 × 3.22: runs of two lengths on both axes
    ys, xs = make_coord(out_size[0], 1)[:, 0], make_coord(1, out_size[1])[:, 1]
    cell = make_cell(*out_size, 1)[0]
    with torch.no_grad():
        prepared = decoder.prepare(features, LR, 0.7, SCALE)
    totals = []
    for chunk in (out_size[0] * out_size[1], 29, 11, 5):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            grid = decoder.grid_decoder(prepared, ys, xs, cell, 0.7)
            for start in range(0, grid.queries, chunk):
                grid.decode(start, min(start + chunk, grid.queries))
        totals.append(counter.get_total_flops())
    assert len(set(totals)) == 1, totals
    table_macs = decoder.feat_dim * (3 * decoder.hidden_size(0.7) + 3) * 7 * 9
    assert totals[0] == 2 * (decoder.macs((7, 9), out_size, 0.7) - table_macs)


def test_runs_group_every_position_of_a_range_once_with_its_lr_pixel() -> None:
    indices = [0, 0, 0, 1, 1, 2, 2, 2, 4, 5, 5]
    runs = _runs(indices)
    assert runs == ([0, 3, 5, 8, 9], [0, 1, 2, 4, 5], 11)
    for lo, hi in [(0, 11), (1, 10), (4, 5), (3, 8), (10, 11)]:
        seen = {}
        for positions, pixels in _run_groups(runs, lo, hi, torch.device("cpu")):
            assert positions.shape[0] == pixels.shape[0]
            for run, pixel in zip(positions.tolist(), pixels.tolist(), strict=True):
                assert run == list(range(run[0], run[0] + len(run)))
                seen |= dict.fromkeys(run, pixel)
        assert seen == {position: indices[position] for position in range(lo, hi)}


def test_slim_false_keeps_the_hidden_layer_whole_at_every_width() -> None:
    slim, full = make_decoder(SPECS["tiny-slim"]), make_decoder(SPECS["tiny-full"])
    assert [full.hidden_size(width) for width in WIDTHS] == [32] * len(WIDTHS)
    assert [slim.hidden_size(width) for width in WIDTHS] == [16, 22, 28, 32]
    assert all(full.used_regions(width) == {} for width in WIDTHS)
    assert slim.used_regions(1.0) == {}
    regions = slim.used_regions(0.5)
    assert regions["mlp.layers.0.weight"] == ((slice(0, 16), slice(None)),)
    assert regions["mlp.layers.0.bias"] == ((slice(0, 16),),)
    assert regions["mlp.layers.1.weight"] == ((slice(None), slice(0, 16)),)
    assert regions.get("mlp.layers.1.bias", ((slice(None),),)) == ((slice(None),),)  # read whole: not sliced
    assert len({full.macs((8, 8), (20, 20), width) for width in WIDTHS}) == 1


def test_a_table_prepared_at_another_width_is_refused() -> None:
    decoder = make_decoder(TINY)
    prepared = decoder.prepare(torch.randn(1, decoder.feat_dim // 9, 3, 3), LR, 1.0, SCALE)
    ys, xs, cell = make_coord(6, 1)[:, 0], make_coord(1, 6)[:, 1], make_cell(6, 6, 1)[0]
    with pytest.raises(ValueError, match="width 0.5 needs 51"):
        decoder.grid_decoder(prepared, ys, xs, cell, 0.5)
    with pytest.raises(ValueError, match="width 0.5 needs 51"):
        decoder.query(prepared, torch.zeros(1, 1, 2), torch.full((1, 1, 2), 0.1), 0.5)
    grid = decoder.grid_decoder(prepared, ys, xs, cell, 1.0)
    for bounds in [(0, 0), (-1, 3), (30, 37)]:
        with pytest.raises(ValueError, match="query range"):
            grid.decode(*bounds)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"hidden": 0}, "hidden must be an integer >= 1"),
        ({"hidden": 2.5}, "hidden must be an integer >= 1"),
        ({"hidden": True}, "hidden must be an integer >= 1"),
        ({"slim": "yes"}, "slim must be true or false"),
        ({"hiden": 64}, "unknown arguments"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry("decoder", "metasr").make_config(args)


def test_a_grid_decoding_is_a_metasr_grid_decoding_through_the_model() -> None:
    model = build_model(TINY).eval()
    with torch.inference_mode():
        grid = model.grid_decoding(
            torch.rand(1, 3, 4, 4),
            1.0,
            (2.0, 2.0),
            make_coord(8, 1)[:, 0],
            make_coord(1, 8)[:, 1],
            make_cell(8, 8, 1)[0],
        )
    assert isinstance(grid, MetaSRGridDecoding)
