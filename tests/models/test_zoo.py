"""Every registered encoder × decoder, at every one of its widths, on tiny configs (timm style: registering a part
tests it). What each part declares about itself (MACs, used regions) is held to what it really does.

The whole-image vs tiled check, which holds each part's receptive radius to account, is in
tests/server/test_zoo_tiling.py (tiling is the server's).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.anysr import AnySR, build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.coords import make_cell, make_coord
from models.flops import count_flops
from models.registry import entries, tiny_spec
from models.spec import ModelSpec
from models.training.data import PatchSampler, TrainBatch
from models.training.train import TrainConfig, train_step

ENCODERS = [part.name for part in entries("encoder")]
DECODERS = [part.name for part in entries("decoder")]
COMBOS = list(itertools.product(ENCODERS, DECODERS))
IDS = [f"{encoder}+{decoder}" for encoder, decoder in COMBOS]
#: Non-square LR and output, scale 1.8 × 2.29.
LR_SIZE = (5, 7)
OUT_SIZE = (9, 16)


def spec_of(combo: tuple[str, str]) -> ModelSpec:
    return tiny_spec(*combo)


def widths_of(combo: tuple[str, str]) -> tuple[float, ...]:
    with torch.device("meta"):
        return build_model(spec_of(combo)).widths


#: (encoder, decoder, width) for every combination at every width it runs at.
CASES = [(*combo, width) for combo in COMBOS for width in widths_of(combo)]
CASE_IDS = [f"{encoder}+{decoder}@{width}" for encoder, decoder, width in CASES]


def test_the_paper_parts_are_registered() -> None:
    assert {"edsr-baseline", "rdn"} <= set(ENCODERS)
    assert {"liif", "metasr", "srno", "arbsr"} <= set(DECODERS)


def measured_flops(function: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


@pytest.mark.parametrize(("encoder", "decoder", "width"), CASES, ids=CASE_IDS)
def test_flops_model_equals_the_flop_counter_within_1_percent(
    tiny_model_factory: Callable[..., AnySR], encoder: str, decoder: str, width: float
) -> None:
    model = tiny_model_factory(spec_of((encoder, decoder)))
    lr = torch.rand(2, 3, *LR_SIZE)
    predicted = count_flops(model, LR_SIZE, OUT_SIZE, width, images=2).total
    measured = measured_flops(lambda: model.upscale(lr, OUT_SIZE, width, query_chunk=50))
    assert measured > 0
    assert abs(predicted - measured) <= 0.01 * measured, f"predicted {predicted}, measured {measured}"


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_every_width_builds_and_flops_rise_with_width(combo: tuple[str, str]) -> None:
    with torch.device("meta"):
        model = build_model(spec_of(combo))
    assert model.widths[-1] == 1.0 and list(model.widths) == sorted(model.widths)
    totals = [count_flops(model, (32, 32), (80, 80), width).total for width in model.widths]
    assert all(low < high for low, high in zip(totals[:-1], totals[1:])), totals


@pytest.mark.parametrize(("encoder", "decoder", "width"), CASES, ids=CASE_IDS)
def test_grid_decoding_in_chunks_equals_the_differentiable_render(
    tiny_model_factory: Callable[..., AnySR], encoder: str, decoder: str, width: float
) -> None:
    """The inference path (chunked, maybe reordered) computes the training path's function."""
    model = tiny_model_factory(spec_of((encoder, decoder)))
    lr = torch.rand(2, 3, *LR_SIZE)
    scale = (OUT_SIZE[0] / LR_SIZE[0], OUT_SIZE[1] / LR_SIZE[1])
    ys = make_coord(OUT_SIZE[0], 1)[:, 0][None].expand(2, -1)
    xs = make_coord(1, OUT_SIZE[1])[:, 1][None].expand(2, -1)
    cell = make_cell(*OUT_SIZE, 2)
    with torch.no_grad():
        rendered = model.decoder.render(model.prepare(lr, width, scale), ys, xs, cell, width)
    chunked = model.upscale(lr, OUT_SIZE, width, query_chunk=23, block_queries=10)
    torch.testing.assert_close(chunked, rendered.clamp(0, 1), rtol=0, atol=2e-5)


def make_images(count: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    images = []
    for index in range(count):
        ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(44.0), indexing="ij")
        smooth = 120 + 60 * torch.sin(xs / 5 + index) * torch.cos(ys / 7 - index)
        noise = 20 * torch.rand(3, 40, 44, generator=generator)
        images.append((smooth + noise).round().clamp(0, 255).to(torch.uint8))
    return images


def a_batch(model: AnySR, scale: float, seed: int) -> TrainBatch:
    sampler = PatchSampler(make_images(), patch=6, queries=24)
    generator = torch.Generator().manual_seed(seed)
    return sampler.sample(2, (scale, scale), generator, whole_grid=model.query_mode == "grid")


def adam_state(model: AnySR, optimizer: torch.optim.Adam) -> dict[str, dict[str, torch.Tensor]]:
    result = {}
    for name, param in model.named_parameters():
        state = optimizer.state.get(param, {})
        result[name] = {"param": param.detach().clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                result[name][key] = state[key].clone()
    return result


NARROW = [(encoder, decoder, width) for encoder, decoder, width in CASES if width < 1.0]


@pytest.mark.parametrize(("encoder", "decoder", "width"), NARROW, ids=[f"{e}+{d}@{w}" for e, d, w in NARROW])
def test_a_narrow_step_moves_only_the_declared_prefix_and_the_prefix_is_what_is_read(
    tiny_model_factory: Callable[..., AnySR], encoder: str, decoder: str, width: float
) -> None:
    """Two halves of one claim. Outside the declared regions the gradient is exactly zero (the part reads
    nothing there) and, after the prefix restore, nothing moved, even with Adam momentum from full-width
    steps. Inside them, every box moved (the declaration is not wider than what runs)."""
    torch.manual_seed(0)
    model = tiny_model_factory(spec_of((encoder, decoder))).train()
    config = TrainConfig(stage=2, init_from="unused", bf16=False, channels_last=False, lr=1e-2)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_step(model, optimizer, a_batch(model, 3.5, seed=1), 1.0, config)
    train_step(model, optimizer, a_batch(model, 3.0, seed=2), 1.0, config)
    regions = model.used_regions(width)
    assert regions, "a narrow width must restrict some parameters"

    batch = a_batch(model, 1.5, seed=3)
    model.zero_grad()
    prediction = model(batch.lr, batch.coord, batch.cell, width, batch.scale, grid=batch.grid)
    torch.nn.functional.l1_loss(prediction, batch.rgb).backward()
    for name, param in model.named_parameters():
        if name not in regions or param.grad is None:
            continue
        outside = torch.ones_like(param, dtype=torch.bool)
        for box in regions[name]:
            outside[box] = False
        assert not param.grad[outside].any(), f"{name} has gradient outside its declared regions at width {width}"

    before = adam_state(model, optimizer)
    train_step(model, optimizer, batch, width, config)
    after = adam_state(model, optimizer)
    for name, boxes in regions.items():
        for kind, old in before[name].items():
            new = after[name][kind]
            outside = torch.ones_like(old, dtype=torch.bool)
            for box in boxes:
                outside[box] = False
            assert torch.equal(new[outside], old[outside]), f"{name}.{kind} moved outside the prefix at {width}"
            for box in boxes:
                assert not torch.equal(new[box], old[box]), f"{name}.{kind}{box} did not move at {width}"


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_a_few_training_steps_lower_the_loss(tiny_model_factory: Callable[..., AnySR], combo: tuple[str, str]) -> None:
    torch.manual_seed(0)
    model = tiny_model_factory(spec_of(combo)).train()
    config = TrainConfig(bf16=False, channels_last=False, lr=2e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = a_batch(model, 2.0, seed=4)
    losses = [float(train_step(model, optimizer, batch, 1.0, config)[0]) for _ in range(12)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_the_checkpoint_round_trips(
    tiny_model_factory: Callable[..., AnySR], combo: tuple[str, str], tmp_path: Path
) -> None:
    model = tiny_model_factory(spec_of(combo))
    path = tmp_path / "model.safetensors"
    saved = save_checkpoint(path, model, {"combo": list(combo)})
    loaded, info = load_checkpoint(path)
    assert info.spec == model.spec == saved.spec
    assert (info.spec.encoder.name, info.spec.decoder.name) == combo
    lr = torch.rand(1, 3, *LR_SIZE)
    for width in model.widths:
        assert torch.equal(loaded.upscale(lr, OUT_SIZE, width), model.upscale(lr, OUT_SIZE, width))


@pytest.mark.parametrize("combo", COMBOS, ids=IDS)
def test_parts_keep_no_state_between_calls(tiny_model_factory: Callable[..., AnySR], combo: tuple[str, str]) -> None:
    """Interleaved prepares of two images (as concurrent requests do) decode each as if alone."""
    model = tiny_model_factory(spec_of(combo))
    first, second = torch.rand(1, 3, *LR_SIZE), torch.rand(1, 3, 6, 6)
    alone = model.upscale(first, OUT_SIZE, 1.0)
    with torch.inference_mode():
        ys, xs = make_coord(OUT_SIZE[0], 1)[:, 0], make_coord(1, OUT_SIZE[1])[:, 1]
        cell = make_cell(*OUT_SIZE, 1)[0]
        grid = model.grid_decoding(first, 1.0, (1.8, 16 / 7), ys, xs, cell)
        model.grid_decoding(second, 1.0, (2.0, 2.0), ys, xs, cell)
        interleaved = grid.decode(0, grid.queries).view(1, 3, *OUT_SIZE).clamp(0, 1)
    torch.testing.assert_close(interleaved, alone, rtol=0, atol=1e-6)
