"""models/decoders/srno.py: SRNO's function at every width and mode, in both of our orders of the work.

The reference below is SRNO's ``query_rgb`` + ``simple_attn`` written out as the authors run it (whole
ensemble concatenated per pixel, the lift and the attention over the whole grid, their LayerNorm), on a
narrow width's weights taken by hand: a subnet of H′ heads is a full SRNO of width d·H′ whose weights are
the prefixes. The generic registry tests (tests/models/test_zoo.py) hold the FLOPs, the regions and the
chunked decoding against the render; these are what they cannot know.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from models.anysr import AnySR, build_model
from models.coords import make_cell, make_coord
from models.decoders.srno import GridLift, SRNOConfig, SRNODecoder, SRNOGridDecoding, axis_blend
from models.registry import tiny_spec
from models.spec import ModelSpec
from models.widths import WIDTHS

TINY = tiny_spec("edsr-baseline", "srno")
SPECS = {"slim": TINY, "paper": TINY.replace_args(decoder={"slim": False})}


def make_model(spec: ModelSpec, seed: int = 0) -> AnySR:
    """Random non-trivial biases and per-head norm gains, so a misplaced term or head would show."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec).eval()
        with torch.no_grad():
            for name, param in model.decoder.named_parameters():
                if name.endswith("bias"):
                    param.uniform_(-0.2, 0.2)
                elif name.endswith("_norm.weight"):
                    param.uniform_(0.5, 1.5)
    return model


def decoder_of(model: AnySR) -> SRNODecoder:
    assert isinstance(model.decoder, SRNODecoder)
    return model.decoder


# -- SRNO as its authors run it ------------------------------------------------------------------


def reference_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SRNO's LayerNorm: unbiased std, eps added to it; ``weight``/``bias`` are (heads, 1, d)."""
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return weight * ((x - mean) / (std + 1e-5)) + bias


def reference_attention(x: torch.Tensor, weights: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """``simple_attn.forward`` on (B, C, H, W) with 1×1 convolutions as einsums."""
    batch, channels, height, width = x.shape
    head_dim = channels // heads
    qkv = torch.einsum("oc,bchw->bohw", weights["qkv.weight"], x) + weights["qkv.bias"][:, None, None]
    qkv = qkv.permute(0, 2, 3, 1).reshape(batch, height * width, heads, 3 * head_dim).permute(0, 2, 1, 3)
    q, k, v = qkv.chunk(3, dim=-1)
    k = reference_layer_norm(k, weights["k_norm.weight"][:, None], weights["k_norm.bias"][:, None])
    v = reference_layer_norm(v, weights["v_norm.weight"][:, None], weights["v_norm.bias"][:, None])
    v = torch.matmul(k.transpose(-2, -1), v) / (height * width)
    v = torch.matmul(q, v).permute(0, 2, 1, 3).reshape(batch, height, width, channels)
    ret = v.permute(0, 3, 1, 2) + x
    hidden = F.gelu(torch.einsum("oc,bchw->bohw", weights["out1.weight"], ret) + weights["out1.bias"][:, None, None])
    return torch.einsum("oc,bchw->bohw", weights["out2.weight"], hidden) + weights["out2.bias"][:, None, None] + x


def reference_lift(
    features: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor, weights: dict[str, Any]
) -> torch.Tensor:
    """``SRNO.query_rgb`` up to ``conv00`` for ``coord`` (B, H, W, 2), ``cell`` (B, 2): (B, C, H, W)."""
    batch, _, height, width = features.shape
    centres_y = -1 + (2 * torch.arange(height, dtype=torch.float32) + 1) / height
    centres_x = -1 + (2 * torch.arange(width, dtype=torch.float32) + 1) / width
    pos_lr = torch.stack(torch.meshgrid(centres_y, centres_x, indexing="ij")).expand(batch, 2, height, width)
    rel_coords, feats, areas = [], [], []
    for vy in (-1, 1):
        for vx in (-1, 1):
            shifted = coord.clone()
            shifted[..., 0] += vy / height + 1e-6
            shifted[..., 1] += vx / width + 1e-6
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            feats.append(F.grid_sample(features, shifted.flip(-1), mode="nearest", align_corners=False))
            old = F.grid_sample(pos_lr, shifted.flip(-1), mode="nearest", align_corners=False)
            rel = coord.permute(0, 3, 1, 2) - old
            rel[:, 0] *= height
            rel[:, 1] *= width
            areas.append((rel[:, 0] * rel[:, 1]).abs() + 1e-9)
            rel_coords.append(rel)
    total = torch.stack(areas).sum(dim=0)
    feats = [feat * (area / total)[:, None] for feat, area in zip(feats, reversed(areas))]
    rel_cell = cell * torch.tensor([height, width])
    out_h, out_w = coord.shape[1:3]
    grid = torch.cat([*rel_coords, *feats, rel_cell[:, :, None, None].expand(batch, 2, out_h, out_w)], dim=1)
    return torch.einsum("oc,bchw->bohw", weights["lift.weight"], grid) + weights["lift.bias"][:, None, None]


def reference_srno(
    features: torch.Tensor,
    lr: torch.Tensor,
    coord: torch.Tensor,
    cell: torch.Tensor,
    weights: dict[str, Any],
    heads: int,
) -> torch.Tensor:
    """``SRNO.query_rgb`` for ``coord`` (B, H, W, 2) and ``cell`` (B, 2): (B, 3, H, W) in [0, 1]."""
    x = reference_lift(features, coord, cell, weights)
    for layer in weights["layers"]:
        x = reference_attention(x, layer, heads)
    hidden = F.gelu(torch.einsum("oc,bchw->bohw", weights["fc1.weight"], x) + weights["fc1.bias"][:, None, None])
    ret = torch.einsum("oc,bchw->bohw", weights["fc2.weight"], hidden) + weights["fc2.bias"][:, None, None]
    skip = F.grid_sample((lr - 0.5) / 0.5, coord.flip(-1), mode="bilinear", padding_mode="border", align_corners=False)
    return (ret + skip) * 0.5 + 0.5


def subnet_weights(decoder: SRNODecoder, width: float) -> tuple[dict[str, Any], int]:
    """The narrow subnet as a full SRNO of its own size: every weight cut to its prefix, by hand."""
    heads, operator, hidden = decoder.sizes(width)
    state = {name: tensor.detach() for name, tensor in decoder.state_dict().items()}
    weights: dict[str, Any] = {
        "lift.weight": state["lift.weight"][:operator],
        "lift.bias": state["lift.bias"][:operator],
        "fc1.weight": state["fc1.weight"][:hidden, :operator],
        "fc1.bias": state["fc1.bias"][:hidden],
        "fc2.weight": state["fc2.weight"][:, :hidden],
        "fc2.bias": state["fc2.bias"],
        "layers": [],
    }
    for index in range(decoder.config.layers):
        prefix = f"layers.{index}."
        weights["layers"].append(
            {
                "qkv.weight": state[prefix + "qkv.weight"][: 3 * operator, :operator],
                "qkv.bias": state[prefix + "qkv.bias"][: 3 * operator],
                **{
                    f"{norm}.{kind}": state[f"{prefix}{norm}.{kind}"][:heads]
                    for norm in ("k_norm", "v_norm")
                    for kind in ("weight", "bias")
                },
                **{
                    f"{linear}.{kind}": state[f"{prefix}{linear}.{kind}"][:operator, :operator]
                    if kind == "weight"
                    else state[f"{prefix}{linear}.{kind}"][:operator]
                    for linear in ("out1", "out2")
                    for kind in ("weight", "bias")
                },
            }
        )
    return weights, heads


def grid_of(out_h: int, out_w: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ys (B, H), xs (B, W), cell (B, 2), coord (B, H, W, 2)) of a whole output grid."""
    ys = make_coord(out_h, 1)[:, 0][None].expand(batch, -1)
    xs = make_coord(1, out_w)[:, 1][None].expand(batch, -1)
    cell = make_cell(out_h, out_w, batch)
    coord = make_coord(out_h, out_w).view(1, out_h, out_w, 2).expand(batch, -1, -1, -1)
    return ys, xs, cell, coord


# -- the function --------------------------------------------------------------------------------

#: Non-square non-integer, even integer and large scales of a 5 × 6 LR image (no query sits on a border
#: cell's centre, where SRNO's area guard decides: see the blend tests below).
GRIDS = [(11, 10), (10, 12), (20, 24)]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("mode", SPECS)
def test_render_and_grid_decoding_equal_srno_as_its_authors_run_it(mode: str, width: float) -> None:
    model = make_model(SPECS[mode])
    decoder = decoder_of(model)
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, decoder.feat_dim, 5, 6, generator=generator)
    lr = torch.rand(2, 3, 5, 6, generator=generator)
    weights, heads = subnet_weights(decoder, width)
    for out_h, out_w in GRIDS:
        ys, xs, cell, coord = grid_of(out_h, out_w, 2)
        with torch.no_grad():
            expected = reference_srno(features, lr, coord, cell, weights, heads)
            prepared = decoder.prepare(features, lr, width, torch.ones(2, 2))
            rendered = decoder.render(prepared, ys, xs, cell, width)
            decoding = decoder.grid_decoder(prepared, ys, xs, cell, width)
            chunked = torch.cat(
                [decoding.decode(s, min(s + 17, out_h * out_w)) for s in range(0, out_h * out_w, 17)], 2
            )
        torch.testing.assert_close(rendered, expected, rtol=0, atol=2e-5)
        torch.testing.assert_close(chunked.view(2, 3, out_h, out_w), expected, rtol=0, atol=2e-5)


def test_the_full_size_decoder_equals_srno_too() -> None:
    """SRNO's own sizes (width 256, 16 heads of 16), at full width and at half (8 heads)."""
    model = make_model(ModelSpec.of("edsr-baseline", "srno", {"n_feats": 16, "n_blocks": 1}))
    decoder = decoder_of(model)
    features = torch.randn(1, 16, 4, 5)
    lr = torch.rand(1, 3, 4, 5)
    ys, xs, cell, coord = grid_of(9, 11, 1)
    for width in (0.5, 1.0):
        weights, heads = subnet_weights(decoder, width)
        with torch.no_grad():
            expected = reference_srno(features, lr, coord, cell, weights, heads)
            prepared = decoder.prepare(features, lr, width, torch.ones(1, 2))
            chunked = decoder.grid_decoder(prepared, ys, xs, cell, width).decode(0, 99)
        torch.testing.assert_close(chunked.view(1, 3, 9, 11), expected, rtol=0, atol=2e-5)


def test_grid_decoding_takes_a_different_grid_per_image_in_any_chunks() -> None:
    """Per-image grids (a tile's offset rows and columns beside a whole ×2 grid), chunks ending mid-row."""
    model = make_model(TINY)
    decoder = decoder_of(model)
    features, lr = torch.randn(2, decoder.feat_dim, 5, 6), torch.rand(2, 3, 5, 6)
    ys = torch.stack([make_coord(19, 1)[3:13, 0], make_coord(10, 1)[:, 0]])
    xs = torch.stack([make_coord(13, 1)[:9, 0], make_coord(12, 1)[1:10, 0]])
    cell = torch.tensor([[2 / 19, 2 / 13], [2 / 10, 2 / 12]])
    with torch.no_grad():
        prepared = decoder.prepare(features, lr, 0.7, torch.ones(2, 2))
        rendered = decoder.render(prepared, ys, xs, cell, 0.7).flatten(2)
        decoding = decoder.grid_decoder(prepared, ys, xs, cell, 0.7)
        assert decoding.queries == 90
        for bounds in [(0, 7), (7, 33), (33, 35), (35, 89), (89, 90)]:
            torch.testing.assert_close(decoding.decode(*bounds), rendered[:, :, slice(*bounds)], rtol=0, atol=2e-5)
        with pytest.raises(ValueError, match="query range"):
            decoding.decode(80, 91)


def test_the_kernel_sums_do_not_depend_on_the_pass_block(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(TINY)
    decoder = decoder_of(model)
    features, lr = torch.randn(1, decoder.feat_dim, 5, 6), torch.rand(1, 3, 5, 6)
    ys, xs, cell, _ = grid_of(12, 13, 1)
    with torch.no_grad():
        prepared = decoder.prepare(features, lr, 1.0, torch.ones(1, 2))
        whole = decoder.grid_decoder(prepared, ys, xs, cell, 1.0).decode(0, 156)
        monkeypatch.setattr("models.decoders.srno.PASS_BLOCK_QUERIES", 5)
        blocks = decoder.grid_decoder(prepared, ys, xs, cell, 1.0).decode(0, 156)
    torch.testing.assert_close(blocks, whole, rtol=0, atol=1e-6)


def held_bytes(value: Any, seen: set[int]) -> int:
    """Bytes of the tensors an object holds (through attributes, dicts, lists, tuples), each counted once."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes()
    if isinstance(value, dict):
        return sum(held_bytes(item, seen) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(held_bytes(item, seen) for item in value)
    if hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
        return sum(held_bytes(item, seen) for item in vars(value).values())
    return 0


def test_a_prepared_grid_holds_memory_linear_in_its_sides_not_its_pixels() -> None:
    """Per-row and per-column terms only: quadrupling the output's pixels at most doubles what is held."""
    model = make_model(TINY)
    decoder = decoder_of(model)
    features, lr = torch.randn(1, decoder.feat_dim, 6, 6), torch.rand(1, 3, 6, 6)
    held = []
    with torch.no_grad():
        prepared = decoder.prepare(features, lr, 1.0, torch.ones(1, 2))
        shared = {id(prepared.lr), id(prepared.tables)}
        for side in (60, 120):
            ys, xs, cell, _ = grid_of(side, side, 1)
            decoding = decoder.grid_decoder(prepared, ys, xs, cell, 1.0)
            assert isinstance(decoding, SRNOGridDecoding)
            held.append(held_bytes(decoding, set(shared) | {id(decoder)}))
    assert held[1] <= 2.1 * held[0], held


@pytest.mark.parametrize("layers", [1, 3])
def test_macs_count_what_runs_for_any_number_of_layers(layers: int) -> None:
    spec = TINY.replace_args(decoder={"layers": layers})
    model = make_model(spec)
    lr = torch.rand(2, 3, 6, 5)
    for width in (0.5, 1.0):
        with FlopCounterMode(display=False) as counter:
            model.upscale(lr, (13, 11), width, query_chunk=40)
        assert model.decoder.macs((6, 5), (13, 11), width) * 2 * 2 + model.encoder.macs((6, 5), width) * 2 * 2 == (
            counter.get_total_flops()
        )


def test_macs_per_output_pixel_of_srnos_own_sizes() -> None:
    """10w² + 2wd + w·h + 3h per output pixel for two layers (recomputation included), 4·C·w per LR pixel."""
    with torch.device("meta"):
        decoder = decoder_of(build_model(ModelSpec.of("edsr-baseline", "srno")))

    def per_output_pixel(width: float) -> int:
        return decoder.macs((1, 1), (1, 3), width) - decoder.macs((1, 1), (1, 2), width) - 2 * decoder.sizes(width)[1]

    assert per_output_pixel(1.0) == 10 * 256**2 + 2 * 256 * 16 + 256 * 256 + 3 * 256
    assert per_output_pixel(0.5) == 10 * 128**2 + 2 * 128 * 16 + 128 * 128 + 3 * 128
    one = decoder.macs((1, 1), (1, 1), 1.0)
    assert decoder.macs((2, 1), (1, 1), 1.0) - one == 4 * 64 * 256


# -- widths, slicing, configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("slim", {0.5: (8, 128, 128), 0.7: (11, 176, 179), 0.9: (14, 224, 230), 1.0: (16, 256, 256)}),
        ("paper", {0.5: (16, 256, 256), 0.7: (16, 256, 256), 0.9: (16, 256, 256), 1.0: (16, 256, 256)}),
    ],
)
def test_sizes_slice_whole_heads(mode: str, expected: dict[float, tuple[int, int, int]]) -> None:
    with torch.device("meta"):
        decoder = decoder_of(build_model(ModelSpec.of("edsr-baseline", "srno", decoder_args={"slim": mode == "slim"})))
    assert {width: decoder.sizes(width) for width in expected} == expected
    if mode == "paper":
        assert all(decoder.used_regions(width) == {} for width in expected)


def test_the_qkv_region_is_the_prefix_heads_q_k_v_rows() -> None:
    """Head h owns qkv rows [3dh, 3dh + 3d) as q, k, v: 8 heads of 16 read rows [0, 384), columns [0, 128)."""
    with torch.device("meta"):
        decoder = decoder_of(build_model(ModelSpec.of("edsr-baseline", "srno")))
    regions = decoder.used_regions(0.5)
    assert regions["layers.1.qkv.weight"] == ((slice(0, 384), slice(0, 128)),)
    assert regions["layers.0.k_norm.weight"] == ((slice(0, 8),),)
    assert regions["lift.weight"] == ((slice(0, 128),),)
    assert regions["fc2.weight"] == ((slice(None), slice(0, 128)),)
    assert "fc2.bias" not in regions


@pytest.mark.parametrize("width", [0.5, 0.7, 0.9])
def test_weights_outside_the_declared_regions_change_nothing(width: float) -> None:
    model = make_model(TINY)
    lr = torch.rand(1, 3, 5, 6)
    before = model.upscale(lr, (11, 10), width)
    regions = model.used_regions(width)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in regions:
                outside = torch.ones_like(param, dtype=torch.bool)
                for box in regions[name]:
                    outside[box] = False
                param[outside] = 7.0
    torch.testing.assert_close(model.upscale(lr, (11, 10), width), before, rtol=0, atol=0)


def test_the_lift_takes_the_encoders_channels() -> None:
    with torch.device("meta"):
        model = build_model(ModelSpec.of("edsr-baseline", "srno", {"n_feats": 24}))
    assert model.decoder.lift.in_features == 4 * (24 + 2) + 2


@pytest.mark.parametrize(
    "args",
    [{"width": 30, "heads": 4}, {"width": 8, "heads": 8}, {"heads": 0}, {"layers": 0}, {"hidden": 0}, {"depth": 2}],
)
def test_bad_configs_are_refused(args: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SRNOConfig.from_args(args)


def test_defaults_are_srnos() -> None:
    config = SRNOConfig()
    assert (config.width, config.heads, config.layers, config.hidden) == (256, 16, 2, 256)
    assert dataclasses.replace(config, slim=False).slim is False


def test_it_decodes_grids_only() -> None:
    model = make_model(TINY)
    assert model.query_mode == "grid" and model.is_global
    lr = torch.rand(1, 3, 4, 4)
    coord, cell = make_coord(8, 8)[None], make_cell(8, 8, 64)[None]
    with pytest.raises(NotImplementedError, match="whole grids"):
        model.query(model.prepare(lr, 1.0, (2.0, 2.0)), coord, cell, 1.0)
    with pytest.raises(ValueError, match="grid="):
        model(lr, coord, cell, 1.0, (2.0, 2.0))


def test_bf16_decoding_stays_close_to_fp32() -> None:
    model = make_model(TINY)
    lr = torch.rand(1, 3, 6, 6)
    fp32 = model.upscale(lr, (14, 13), 1.0)
    bf16 = model.upscale(lr, (14, 13), 1.0, compute_dtype=torch.bfloat16)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.05


# -- the ensemble blend at border cell centres ---------------------------------------------------


def test_axis_blend_is_the_linear_weight_and_a_half_each_where_both_shifts_meet() -> None:
    minus = torch.tensor([0.25, -0.5, 0.0, 0.0, 0.3])
    plus = torch.tensor([-1.75, -1.5, -2.0, 0.0, 0.3])
    blend = axis_blend(minus, plus)
    torch.testing.assert_close(blend[-1], torch.tensor([1.75 / 2, 1.5 / 2, 1.0, 0.5, 0.5]))
    torch.testing.assert_close(blend[1], torch.tensor([0.25 / 2, 0.5 / 2, 0.0, 0.5, 0.5]))


def test_the_lift_on_a_border_cells_centre_is_the_limit_from_inside() -> None:
    """At ×3 the last LR row's and column's centres are output pixel centres too. There both shifts of that
    axis pick the last cell with a relative coordinate of exactly 0, so every area is 0 and SRNO's 1e-9
    guard alone weights the four shifts 1/4 each, pulling in the neighbouring cell of the other axis half
    the time. Ours equals the limit of queries moving a hair towards the border, which pick the same cells
    (a hair inwards the shift −1 pick changes cell and its relative coordinate jumps by 2, as at every LR
    centre in SRNO); SRNO's exact arithmetic does not."""
    decoder = decoder_of(make_model(TINY))
    features, lr = torch.randn(1, decoder.feat_dim, 4, 5), torch.rand(1, 3, 4, 5)
    ys, xs, cell, coord = grid_of(12, 15, 1)
    assert float(xs[0, -2]) == pytest.approx(1 - 1 / 5) and float(ys[0, -2]) == pytest.approx(1 - 1 / 4)
    nudged_ys, nudged_xs, nudged_coord = ys.clone(), xs.clone(), coord.clone()
    nudged_ys[0, -2] += 1e-4
    nudged_xs[0, -2] += 1e-4
    nudged_coord[0, -2, :, 0] += 1e-4
    nudged_coord[0, :, -2, 1] += 1e-4
    weights, _ = subnet_weights(decoder, 1.0)
    with torch.no_grad():
        prepared = decoder.prepare(features, lr, 1.0, torch.ones(1, 2))
        exact = GridLift(decoder, prepared, ys, xs, cell, 1.0)(0, 180).view(12, 15, -1)
        near = GridLift(decoder, prepared, nudged_ys, nudged_xs, cell, 1.0)(0, 180).view(12, 15, -1)
        guarded = reference_lift(features, coord, cell, weights)[0].permute(1, 2, 0)
        guarded_near = reference_lift(features, nudged_coord, cell, weights)[0].permute(1, 2, 0)
    elsewhere = torch.ones(12, 15, dtype=torch.bool)
    elsewhere[-2, :] = elsewhere[:, -2] = False
    torch.testing.assert_close(exact[elsewhere], guarded[elsewhere], rtol=0, atol=1e-5)
    torch.testing.assert_close(near, guarded_near, rtol=0, atol=1e-5)
    assert (exact - near).abs().max() < 1e-2
    assert (guarded - guarded_near).abs().max() > 0.1
