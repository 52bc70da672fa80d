"""models/anysr.py: the whole model at every width and scale, and the prefix property of its subnets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models.anysr import AnySR
from models.ase import ase_input_size
from models.coords import make_cell, make_coord
from models.registry import resolve_spec
from models.spec import TINY_SPEC, ModelSpec
from models.widths import WIDTHS, channels_at

MODES = {"slim": TINY_SPEC, "paper": TINY_SPEC.replace_args(decoder={"slim": False})}
LR_SIZE = (6, 7)

#: A region of one parameter: (state-dict name, index into the tensor).
Region = tuple[str, tuple[int | slice, ...]]


def hidden_sizes(spec: ModelSpec, width: float) -> list[int]:
    """Decoder hidden sizes worked out from the spec here, independently of models/decoders/liif.py."""
    decoder = resolve_spec(spec).decoder.args
    return [channels_at(size, width if decoder["slim"] else 1.0) for size in decoder["hidden"]]


def outside_prefix(spec: ModelSpec, width: float) -> list[Region]:
    """Every weight a subnet of ``width`` must never read (the method notes' slicing rules)."""
    encoder = resolve_spec(spec).encoder.args
    k = channels_at(encoder["n_feats"], width)
    every = slice(None)
    regions: list[Region] = []
    for index in range(encoder["n_blocks"]):
        block = f"encoder.blocks.{index}"
        regions += [
            (f"{block}.conv1.weight", (slice(k, None),)),  # filters beyond the first k
            (f"{block}.conv1.bias", (slice(k, None),)),
            (f"{block}.conv2.weight", (every, slice(k, None))),  # input channels beyond k
        ]
        if encoder["ase"]:
            length = ase_input_size(k, encoder["ase_chunk"], encoder["interweave"])
            regions += [
                (f"{block}.ase.fc1.weight", (every, slice(length, None))),  # W1 columns beyond the vector
                (f"{block}.ase.fc2.weight", (slice(k, None),)),  # W2 rows beyond k
                (f"{block}.ase.fc2.bias", (slice(k, None),)),
            ]
    sizes = hidden_sizes(spec, width)
    for index, size in enumerate(sizes):
        layer = f"decoder.mlp.layers.{index}"
        regions += [(f"{layer}.weight", (slice(size, None),)), (f"{layer}.bias", (slice(size, None),))]
        if index > 0:
            regions.append((f"{layer}.weight", (every, slice(sizes[index - 1], None))))
    regions.append((f"decoder.mlp.layers.{len(sizes)}.weight", (every, slice(sizes[-1], None))))
    return regions


def inside_prefix(spec: ModelSpec, width: float) -> dict[str, Region]:
    """One used element per sliced region, at the edge of the prefix (the easiest place to be off by one)."""
    encoder = resolve_spec(spec).encoder.args
    k = channels_at(encoder["n_feats"], width)
    length = ase_input_size(k, encoder["ase_chunk"], encoder["interweave"])
    sizes = hidden_sizes(spec, width)
    last = len(sizes)
    return {
        "conv1 filter": ("encoder.blocks.0.conv1.weight", (k - 1,)),
        "conv1 bias": ("encoder.blocks.1.conv1.bias", (k - 1,)),
        "conv2 input": ("encoder.blocks.0.conv2.weight", (slice(None), k - 1)),
        "ASE W1 column": ("encoder.blocks.1.ase.fc1.weight", (slice(None), length - 1)),
        "ASE W2 row": ("encoder.blocks.0.ase.fc2.weight", (k - 1,)),
        "decoder first hidden unit": ("decoder.mlp.layers.0.weight", (sizes[0] - 1,)),
        "decoder hidden-to-hidden": ("decoder.mlp.layers.1.weight", (sizes[1] - 1, sizes[0] - 1)),
        "decoder output input": (f"decoder.mlp.layers.{last}.weight", (slice(None), sizes[-1] - 1)),
    }


def perturb(model: AnySR, regions: list[Region], seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, index in regions:
            target = params[name][index]
            assert target.numel() > 0, f"empty region {name}{index}"
            params[name][index] += 3.0 * torch.randn(target.shape, generator=generator)


def wake_prefix_edges(model: AnySR, width: float) -> None:
    """Make the last used unit of each ReLU layer fire, so weights that feed or read it must show."""
    spec = model.spec
    k = channels_at(spec.encoder.args["n_feats"], width)
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.conv1.bias[k - 1] = 1.0
        for layer, size in zip(model.decoder.mlp.layers, hidden_sizes(spec, width), strict=False):
            layer.bias[size - 1] = 1.0


def run(model: AnySR, width: float) -> torch.Tensor:
    lr = torch.rand(2, 3, *LR_SIZE, generator=torch.Generator().manual_seed(7))
    return model.upscale(lr, (8, 19), width, scale=(1.3, 2.7))


@pytest.mark.parametrize("width", [0.5, 0.7, 0.9])
def test_narrow_width_ignores_every_weight_outside_its_prefix(
    tiny_model_factory: Callable[..., AnySR], width: float
) -> None:
    model = tiny_model_factory()
    before = run(model, width)
    perturb(model, outside_prefix(model.spec, width))
    assert torch.equal(run(model, width), before)
    # The same perturbation must matter at full width, or the test proved nothing.
    assert not torch.allclose(run(model, 1.0), run(tiny_model_factory(), 1.0))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("region", list(inside_prefix(TINY_SPEC, 1.0)))
def test_every_sliced_region_inside_the_prefix_is_used(
    tiny_model_factory: Callable[..., AnySR], width: float, region: str
) -> None:
    model = tiny_model_factory()
    wake_prefix_edges(model, width)
    before = run(model, width)
    perturb(model, [inside_prefix(model.spec, width)[region]])
    # Unused weights leave the output bit-identical (above), so any difference at all proves use.
    assert not torch.equal(run(model, width), before)


def test_paper_mode_runs_the_full_decoder_at_every_width(tiny_model_factory: Callable[..., AnySR]) -> None:
    model = tiny_model_factory(MODES["paper"])
    before = run(model, 0.5)
    narrow_hidden = channels_at(TINY_SPEC.decoder.args["hidden"][0], 0.5)
    perturb(model, [("decoder.mlp.layers.0.weight", (slice(narrow_hidden, None),))])
    assert not torch.equal(run(model, 0.5), before)


SCALES = [(1.1, 1.1), (1.5, 1.5), (1.3, 2.7), (2.7, 1.3), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (5.0, 5.0)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", SCALES, ids=[f"{h}x{w}" for h, w in SCALES])
def test_upscale_shape_and_range_at_every_width(
    tiny_model_factory: Callable[..., AnySR], mode: str, scale: tuple[float, float]
) -> None:
    model = tiny_model_factory(MODES[mode])
    lr = torch.rand(2, 3, *LR_SIZE)
    out_size = (round(LR_SIZE[0] * scale[0]), round(LR_SIZE[1] * scale[1]))
    for width in WIDTHS:
        out = model.upscale(lr, out_size, width, scale=scale)
        assert out.shape == (2, 3, *out_size)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1


def test_forward_takes_per_sample_scales_and_returns_unclamped_rgb(tiny_model: AnySR) -> None:
    lr = torch.rand(2, 3, *LR_SIZE)
    coord = torch.rand(2, 40, 2) * 2 - 1
    cell = torch.full((2, 40, 2), 0.05)
    scales = torch.tensor([[1.3, 2.7], [4.0, 4.0]])
    out = tiny_model(lr, coord, cell, 0.9, scales)
    assert out.shape == (2, 40, 3)
    assert out.requires_grad  # the training path keeps gradients
    alone = tiny_model(lr[1:], coord[1:], cell[1:], 0.9, scales[1:])
    torch.testing.assert_close(out[1:], alone)


def test_upscale_equals_forward_on_the_pixel_grid(tiny_model: AnySR) -> None:
    lr = torch.rand(1, 3, *LR_SIZE)
    out_h, out_w = 9, 16
    coord = make_coord(out_h, out_w)[None]
    cell = make_cell(out_h, out_w, coord.shape[1])[None]
    with torch.no_grad():
        expected = tiny_model(lr, coord, cell, 0.7, (out_h / LR_SIZE[0], out_w / LR_SIZE[1])).clamp(0, 1)
    expected = expected.reshape(1, out_h, out_w, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(tiny_model.upscale(lr, (out_h, out_w), 0.7), expected)


def test_upscale_result_does_not_depend_on_query_chunking(tiny_model: AnySR) -> None:
    lr = torch.rand(2, 3, *LR_SIZE)
    calls: list[tuple[int, int]] = []
    whole = tiny_model.upscale(lr, (11, 13), 0.5)
    chunked = tiny_model.upscale(
        lr, (11, 13), 0.5, query_chunk=17, progress=lambda done, total: calls.append((done, total))
    )
    torch.testing.assert_close(chunked, whole)
    assert [done for done, _ in calls] == [*range(17, 143, 17), 143]
    assert {total for _, total in calls} == {143}


def test_batch_members_do_not_mix(tiny_model: AnySR) -> None:
    lr = torch.rand(3, 3, *LR_SIZE)
    together = tiny_model.upscale(lr, (10, 12), 0.9)
    for index in range(3):
        alone = tiny_model.upscale(lr[index : index + 1], (10, 12), 0.9)
        torch.testing.assert_close(together[index : index + 1], alone)


def test_default_scale_is_the_size_ratio(tiny_model: AnySR) -> None:
    lr = torch.rand(1, 3, *LR_SIZE)
    implicit = tiny_model.upscale(lr, (9, 19), 1.0)
    explicit = tiny_model.upscale(lr, (9, 19), 1.0, scale=(9 / 6, 19 / 7))
    assert torch.equal(implicit, explicit)
    assert not torch.allclose(implicit, tiny_model.upscale(lr, (9, 19), 1.0, scale=(4.0, 4.0)))


def test_rejects_unknown_width_and_badly_shaped_scales(tiny_model: AnySR) -> None:
    lr = torch.rand(2, 3, *LR_SIZE)
    with pytest.raises(ValueError, match="width must be one of"):
        tiny_model.upscale(lr, (12, 14), 0.6)
    with pytest.raises(ValueError, match=r"scale tensor must have shape \(2, 2\), got \(1, 2\)"):
        tiny_model.prepare(lr, 1.0, torch.tensor([[2.0, 2.0]]))
