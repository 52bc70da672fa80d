"""ArbSR: what the registry-driven tests cannot know.

The fast grid path against a plain reference written here the way ArbSR's code computes (per-pixel expert
weights mixed first, ``grid_sample``, a zero-padded tail convolution over the whole output); the reach of
each piece measured exactly on the gradient's support (adaption blocks with the pooling grid's parity,
the upsampler with its offsets pinned at the clamp); odd sizes; the window alignment; per-image scales;
where the encoder hook runs the adaption blocks; config validation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.anysr import AnySR, build_model
from models.coords import make_cell, make_coord
from models.decoders.arbsr import AdaptionBlock, ArbSRConfig, ArbSRDecoder, ChannelAffine
from models.registry import entry, tiny_spec
from models.spec import ModelSpec

TINY = dict(entry("decoder", "arbsr").tiny)


def tiny_model(seed: int = 0, **decoder_args: object) -> AnySR:
    encoder_args = dict(entry("encoder", "edsr-baseline").tiny)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(ModelSpec.of("edsr-baseline", "arbsr", encoder_args, {**TINY, **decoder_args}))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias") and ".ase." not in name:
                    param.uniform_(-0.2, 0.2)
    return model.eval()


def reference_decode(
    decoder: ArbSRDecoder, features: torch.Tensor, scale: tuple[float, float], out_size: tuple[int, int]
) -> torch.Tensor:
    """ArbSR's SA_upsample + tail, written plainly: positions from the output grid, per-pixel mixed expert
    weights, grid_sample (align_corners=False on pixel centres), zero-padded 3×3 tail over the whole output."""
    up = decoder.upsampler
    _, channels, height, width = features.shape
    out_h, out_w = out_size
    ys, xs = make_coord(out_h, 1)[:, 0].double(), make_coord(1, out_w)[:, 1].double()
    pos_y, pos_x = (ys + 1) * height / 2, (xs + 1) * width / 2
    rel_y, rel_x = pos_y - torch.floor(pos_y + 1e-3) - 0.5, pos_x - torch.floor(pos_x + 1e-3) - 0.5
    grid_y, grid_x = torch.meshgrid(rel_y.float(), rel_x.float(), indexing="ij")
    inputs = torch.stack(
        (torch.full_like(grid_y, 1 / scale[1]), torch.full_like(grid_y, 1 / scale[0]), grid_y, grid_x), dim=-1
    )
    hidden = F.relu(up.embed2(F.relu(up.embed1(inputs))))
    routing = torch.sigmoid(up.routing(hidden))  # (H, W, E)
    offset = up.offset(hidden).clamp(-decoder.config.max_offset, decoder.config.max_offset)
    experts = routing.shape[-1]
    compress = (routing @ up.compress.reshape(experts, -1)).view(out_h, out_w, *up.compress.shape[1:])
    expand = (routing @ up.expand.reshape(experts, -1)).view(out_h, out_w, *up.expand.shape[1:])
    base_y, base_x = torch.meshgrid(ys.float(), xs.float(), indexing="ij")
    grid = torch.stack((base_x + offset[..., 0] * 2 / width, base_y + offset[..., 1] * 2 / height), dim=-1)
    sampled = F.grid_sample(features, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled[0].permute(1, 2, 0)[..., None]  # (H, W, C, 1)
    hr = (expand @ (compress @ sampled))[..., 0] + sampled[..., 0]  # (H, W, C)
    return F.conv2d(hr.permute(2, 0, 1)[None], decoder.tail.weight, decoder.tail.bias, padding=1) * 0.5 + 0.5


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_upscale_equals_a_plain_reference_of_arbsrs_upsampler(width: float) -> None:
    model = tiny_model()
    lr = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(1))
    out_size = (16, 25)  # x2.29 x x2.78, odd LR sides
    scale = (out_size[0] / 7, out_size[1] / 9)
    with torch.no_grad():
        scales = torch.tensor([scale])
        features = model.encoder(lr, width, scales, model.decoder.encoder_hook(scales, width))
        expected = reference_decode(model.decoder, features, scale, out_size)
    ours = model.upscale(lr, out_size, width, query_chunk=37)
    torch.testing.assert_close(ours, expected.clamp(0, 1), rtol=0, atol=1e-5)


def test_bfloat16_products_stay_close_to_float32() -> None:
    """``compute_dtype`` runs the embedding, expert and tail products in bf16 (sampling stays float32)."""
    model = tiny_model()
    lr = torch.rand(1, 3, 8, 9)
    full = model.upscale(lr, (19, 20), 1.0)
    half = model.upscale(lr, (19, 20), 1.0, compute_dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0, atol=3e-2)


def test_chunks_decoded_out_of_order_give_the_same_pixels() -> None:
    """The row cache serves in-order chunks; any order recomputes rows and gives the same result."""
    model = tiny_model()
    lr = torch.rand(1, 3, 6, 8)
    out_h, out_w = 13, 18
    ys, xs, cell = make_coord(out_h, 1)[:, 0], make_coord(1, out_w)[:, 1], make_cell(out_h, out_w, 1)[0]
    with torch.inference_mode():
        grid = model.grid_decoding(lr, 1.0, (out_h / 6, out_w / 8), ys, xs, cell)
        whole = grid.decode(0, grid.queries)
        starts = list(range(0, grid.queries, 29))
        pieces = {start: grid.decode(start, min(start + 29, grid.queries)) for start in reversed(starts)}
    torch.testing.assert_close(torch.cat([pieces[start] for start in starts], dim=2), whole, rtol=0, atol=1e-6)


def furthest(gradient: torch.Tensor, row: int, column: int) -> tuple[int, int, int, int]:
    """(up, down, left, right): how far the nonzero support of a (C, h, w) gradient reaches from (row, column)."""
    support = gradient.abs().sum(0).nonzero()
    return (
        row - int(support[:, 0].min()),
        int(support[:, 0].max()) - row,
        column - int(support[:, 1].min()),
        int(support[:, 1].max()) - column,
    )


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_an_adaption_block_reaches_its_mask_reach_on_the_pooling_grid(depth: int) -> None:
    """The pool's 2 × 2 cells start at even coordinates: an even pixel reaches one less up/left than down/right,
    an odd one the reverse, and the larger side is exactly the declared reach, 4 + 2 · depth."""
    torch.manual_seed(0)
    block = AdaptionBlock(8, ArbSRConfig(mask_channels=4, mask_depth=depth, experts=2, routing_hidden=4))
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, ChannelAffine):
                module.bias.uniform_(0.2, 0.5)  # keep ReLUs alive at random inputs
    x = torch.randn(1, 8, 40, 40, requires_grad=True)
    out = block(x, torch.tensor([[0.5, 0.4]]))
    reach = block.mask.reach
    assert reach == 4 + 2 * depth
    for pixel in (20, 21):
        (gradient,) = torch.autograd.grad(out[0, :, pixel, pixel].sum(), x, retain_graph=True)
        up, down, left, right = furthest(gradient[0], pixel, pixel)
        near, far = (reach - 1, reach) if pixel % 2 == 0 else (reach, reach - 1)
        assert (up, down, left, right) == (near, far, near, far)


def test_an_odd_size_pads_only_its_last_row_and_column() -> None:
    """Odd sides are padded (replicating) before the 2 × 2 pool: pixels beyond the mask's reach of the padded
    edge equal those of a larger image with the same content."""
    torch.manual_seed(0)
    block = AdaptionBlock(8, ArbSRConfig(mask_channels=4, experts=2, routing_hidden=4))
    large = torch.randn(1, 8, 30, 32)
    odd = large[..., :21, :23]
    inverse_scale = torch.tensor([[0.4, 0.3]])
    with torch.no_grad():
        expected = block(large, inverse_scale)[..., :21, :23]
        ours = block(odd, inverse_scale)
    assert ours.shape == odd.shape and torch.isfinite(ours).all()
    keep = 21 - block.mask.reach - 1
    torch.testing.assert_close(ours[..., :keep, :keep], expected[..., :keep, :keep], rtol=0, atol=1e-5)
    assert not torch.allclose(ours[..., -1, :], expected[..., -1, :], atol=1e-4)


def test_windows_must_start_on_even_pixels() -> None:
    """Why ``alignment = 2``: cropping an even number of pixels off the top-left leaves the interior of an
    adaption block's output as it was; an odd number moves the pooling grid and changes it."""
    torch.manual_seed(0)
    block = AdaptionBlock(8, ArbSRConfig(mask_channels=4, experts=2, routing_hidden=4))
    x = torch.randn(1, 8, 40, 40)
    inverse_scale = torch.tensor([[0.5, 0.5]])
    margin = block.mask.reach + 3  # beyond the reach of every border, cropped or not
    with torch.no_grad():
        whole = block(x, inverse_scale)[..., margin:-margin, margin:-margin]
        even = block(x[..., 2:, 2:], inverse_scale)[..., margin - 2 : -margin, margin - 2 : -margin]
        odd = block(x[..., 1:, 1:], inverse_scale)[..., margin - 1 : -margin, margin - 1 : -margin]
    torch.testing.assert_close(even, whole, rtol=0, atol=1e-5)
    assert (odd - whole).abs().max() > 1e-3
    assert ArbSRDecoder.alignment == 2


@pytest.mark.parametrize("max_offset", [0.0, 0.5, 1.5])
def test_the_upsampler_reaches_ceil_of_max_offset_plus_one_and_a_half(max_offset: float) -> None:
    """With every offset pinned at -max_offset (then +max_offset) and a scale just above 1, the furthest
    feature an output pixel reads lies ceil(max_offset + 1.5) LR pixels from its own: the declared
    upsampler radius; the tail's neighbouring output rows sit almost one LR pixel away."""
    model = tiny_model(max_offset=max_offset)
    decoder = model.decoder
    expected = math.ceil(max_offset + 1.5)
    assert decoder.receptive_radius == sum(block.reach for block in decoder.adapters) + expected
    side, out_side = 24, 25
    features = torch.randn(1, decoder.channels, side, side, requires_grad=True)
    ys = make_coord(out_side, 1)[:, 0][None]
    xs = make_coord(1, out_side)[:, 1][None]
    cell = make_cell(out_side, out_side, 1)
    scale = torch.tensor([[out_side / side, out_side / side]])
    for sign in (-1.0, 1.0):
        with torch.no_grad():
            decoder.upsampler.offset.weight.zero_()
            decoder.upsampler.offset.bias.fill_(sign * 10.0)  # clamped to ±max_offset
        rgb = decoder.render(decoder.prepare(features, features[:, :3], 1.0, scale), ys, xs, cell, 1.0)
        reached = 0
        for index in range(8, 17):
            own = (2 * index + 1) * side // (2 * out_side)
            (gradient,) = torch.autograd.grad(rgb[0, :, index, index].sum(), features, retain_graph=True)
            reached = max(reached, *furthest(gradient[0], own, own))
        assert reached == expected, (sign, reached)


def test_images_of_one_batch_may_have_different_scales() -> None:
    """Each image routes its own experts (adaption kernels and upsampler embedding) from its own scale."""
    model = tiny_model()
    lr = torch.rand(2, 3, 6, 7)
    out_h, out_w = 14, 15
    ys, xs, cell = make_coord(out_h, 1)[:, 0], make_coord(1, out_w)[:, 1], make_cell(out_h, out_w, 1)[0]
    scales = torch.tensor([[2.3, 2.1], [3.5, 1.4]])
    with torch.inference_mode():
        grid = model.grid_decoding(lr, 1.0, scales, ys, xs, cell)
        together = grid.decode(0, grid.queries)
        for image in range(2):
            alone = model.grid_decoding(lr[image : image + 1], 1.0, scales[image : image + 1], ys, xs, cell)
            torch.testing.assert_close(together[image : image + 1], alone.decode(0, alone.queries), rtol=0, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_the_hook_adapts_after_every_kth_stage() -> None:
    """floor(n_stages / K) blocks, after stages K, 2K, ... (1-based); the other stages pass through."""
    encoder_args = {**entry("encoder", "edsr-baseline").tiny, "n_blocks": 5}
    model = build_model(ModelSpec.of("edsr-baseline", "arbsr", encoder_args, {**TINY, "adapt_every": 2}))
    decoder = model.decoder
    assert len(decoder.adapters) == 2
    hook = decoder.encoder_hook(torch.tensor([[2.0, 3.0]]), 1.0)
    assert hook is not None
    features = torch.randn(1, decoder.channels, 6, 6)
    ran = []
    for index, block in enumerate(decoder.adapters):
        block.register_forward_hook(lambda *_, index=index: ran.append(index))
    for stage in range(5):
        out = hook(stage, features)
        if stage in (1, 3):
            assert not torch.equal(out, features)
        else:
            assert out is features
    assert ran == [0, 1]
    assert model.receptive_radius == model.encoder.receptive_radius + 2 * 8 + 2


def test_the_default_model_declares_its_radius_and_alignment() -> None:
    """EDSR-baseline (radius 34) with 4 adaption blocks of reach 8 and the upsampler's 2: 68, windows on even pixels."""
    with torch.device("meta"):
        model = build_model(ModelSpec.of("edsr-baseline", "arbsr"))
    assert len(model.decoder.adapters) == 4
    assert model.receptive_radius == 34 + 4 * 8 + 2
    assert model.alignment == 2


def test_folded_batchnorm_is_eval_batchnorm() -> None:
    norm = torch.nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    affine = ChannelAffine(5)
    with torch.no_grad():
        factor = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        affine.weight.copy_(factor)
        affine.bias.copy_(norm.bias - norm.running_mean * factor)
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(affine(x), norm(x))


@pytest.mark.parametrize(
    "args",
    [
        {"adapt_every": 0},
        {"experts": 0},
        {"embed_dim": True},
        {"compress_ratio": 1.5},
        {"mask_depth": -1},
        {"max_offset": -0.5},
        {"max_offset": math.inf},
        {"max_offset": "1"},
    ],
)
def test_bad_config_is_refused(args: dict) -> None:
    with pytest.raises(ValueError):
        ArbSRConfig.from_args(args)


def test_more_stages_per_block_than_the_encoder_has_is_refused() -> None:
    spec = tiny_spec("edsr-baseline", "arbsr")
    with pytest.raises(ValueError, match="adapt_every"):
        build_model(ModelSpec.of("edsr-baseline", "arbsr", spec.encoder.args, {**TINY, "adapt_every": 3}))
