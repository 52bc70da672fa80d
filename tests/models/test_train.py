"""models/train.py: Algorithm 1's sampler, the prefix-only update, the schedule, and exact resume.

Training runs use a tiny model on small synthetic PNGs, so each takes a second or two on one thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from models.anysr import AnySR, build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.prefix import used_regions
from models.spec import TINY_SPEC
from models.training.data import PatchSampler, TrainBatch
from models.training.train import (
    GROUP_INTERVALS,
    TrainConfig,
    build_initial_model,
    draw_scale_and_width,
    learning_rate,
    pick_weighted,
    train,
    train_step,
)
from models.widths import WIDTHS, scale_group

#: The tiny model as a training config names it (the nested spec).
TINY = TINY_SPEC.to_dict()
#: Its stage-1 form: no ASE.
TINY_STAGE1 = TINY_SPEC.replace_args(encoder={"ase": False}).to_dict()


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    smooth = 120 + 60 * torch.sin(xs / 6 + seed) * torch.cos(ys / 9 - seed)
    return (smooth + 20 * torch.rand(3, height, width, generator=generator)).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    for index in range(3):
        image = synthetic_image(48 + 8 * index, 56, seed=index)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index}.png")
    return folder


def tiny_config(run_dir: Path, data_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "run_dir": str(run_dir),
        "data_dirs": [str(data_dir)],
        "model": TINY_STAGE1,
        "batch_size": 2,
        "patch": 8,
        "queries": 32,
        "steps": 6,
        "lr": 1e-3,
        "scale_max": 4.0,
        "bf16": False,
        "checkpoint_every_s": 1e9,
        "log_every": 1000,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


# ---- Algorithm 1's sampler ---------------------------------------------------------------------------------


def draws(config: TrainConfig, count: int, seed: int = 0) -> list[tuple[float, float]]:
    generator = torch.Generator().manual_seed(seed)
    return [draw_scale_and_width(config, generator) for _ in range(count)]


def test_stage1_draws_uniform_scales_at_full_width() -> None:
    config = TrainConfig(stage=1, scale_min=1.0, scale_max=4.0)
    samples = draws(config, 20_000)
    scales = torch.tensor([scale for scale, _ in samples])
    assert {width for _, width in samples} == {1.0}
    assert 1.0 <= float(scales.min()) and float(scales.max()) <= 4.0
    assert float(scales.mean()) == pytest.approx(2.5, abs=0.03)  # U(1, 4): mean 2.5, sd of the mean 0.006
    assert float((scales < 2.0).float().mean()) == pytest.approx(1 / 3, abs=0.015)


@pytest.mark.parametrize("reset_p", [0.6, 0.2])
def test_stage2_hits_each_group_and_the_reset_at_the_configured_rates(reset_p: float) -> None:
    config = TrainConfig(stage=2, init_from="unused.safetensors", reset_p=reset_p)
    count = 20_000
    samples = draws(config, count, seed=1)
    groups = [scale_group(scale) for scale, _ in samples]
    for group in range(len(WIDTHS)):
        members = [(scale, width) for (scale, width), g in zip(samples, groups) if g == group]
        # t uniform over four groups: 1/4 each (binomial sd 0.003 at this count; tolerance 5 sd).
        assert len(members) / count == pytest.approx(0.25, abs=0.015)
        low, high = GROUP_INTERVALS[group]
        scales = torch.tensor([scale for scale, _ in members])
        assert low <= float(scales.min()) and float(scales.max()) <= high
        assert float(scales.mean()) == pytest.approx((low + high) / 2, abs=0.02 * (high - low) + 0.005)
        widths = {width for _, width in members}
        assert widths <= {WIDTHS[group], 1.0}
        if WIDTHS[group] < 1.0:
            # The reset sends a batch of this group to the full network with probability reset_p.
            reset = sum(width == 1.0 for _, width in members) / len(members)
            assert reset == pytest.approx(reset_p, abs=0.03)  # ~5000 draws: sd <= 0.007


@pytest.mark.parametrize(("reset_p", "narrow"), [(0.0, True), (1.0, False)])
def test_reset_probability_extremes(reset_p: float, narrow: bool) -> None:
    config = TrainConfig(stage=2, init_from="unused.safetensors", reset_p=reset_p)
    for scale, width in draws(config, 2_000, seed=2):
        assert width == (WIDTHS[scale_group(scale)] if narrow else 1.0)


def test_group_weights_shift_the_group_mix_and_nothing_else() -> None:
    config = TrainConfig(stage=2, init_from="unused.safetensors", reset_p=0.6, group_weights=[2, 1, 1, 0])
    count = 20_000
    samples = draws(config, count, seed=3)
    shares = [sum(scale_group(scale) == g for scale, _ in samples) / count for g in range(len(WIDTHS))]
    # 2:1:1:0 -> 1/2, 1/4, 1/4, 0 (binomial sd <= 0.0036; tolerance 4 sd); a zero weight never draws.
    assert shares == pytest.approx([0.5, 0.25, 0.25, 0.0], abs=0.015)
    for scale, width in samples:
        assert width in {WIDTHS[scale_group(scale)], 1.0}


def test_uniform_group_weights_match_the_unweighted_draws() -> None:
    plain = TrainConfig(stage=2, init_from="unused.safetensors")
    weighted = TrainConfig(stage=2, init_from="unused.safetensors", group_weights=[1, 1, 1, 1])
    groups = [[scale_group(scale) for scale, _ in draws(config, 2_000, seed=4)] for config in (plain, weighted)]
    assert groups[0] == groups[1]


def test_pick_weighted_edges() -> None:
    assert [pick_weighted(d, [1, 0, 3]) for d in (0.0, 0.2499, 0.25, 0.9999999)] == [0, 0, 2, 2]
    assert pick_weighted(1.0, [1, 1, 0]) == 1  # a draw rounded up to the total lands on the last live group


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        TrainConfig.from_dict({"stage": 3})
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig.from_dict({"stage": 2})
    with pytest.raises(ValueError, match=r"reset_p must be in \[0, 1\], got 1.5"):
        TrainConfig.from_dict({"stage": 2, "init_from": "x", "reset_p": 1.5})
    for weights in ([1, 1, 1], [1, -1, 1, 1], [0, 0, 0, 0]):
        with pytest.raises(ValueError, match="group_weights must be 4 non-negative numbers"):
            TrainConfig.from_dict({"stage": 2, "init_from": "x", "group_weights": weights})
    with pytest.raises(ValueError, match="init_parts must be 'all' or 'encoder', got 'decoder'"):
        TrainConfig.from_dict({"init_parts": "decoder"})


def test_learning_rate_is_constant_then_cosine_to_the_floor() -> None:
    config = TrainConfig(steps=100, lr=1e-3, lr_min=1e-5, decay_start=0.6)
    assert learning_rate(config, 0) == learning_rate(config, 59) == 1e-3
    assert learning_rate(config, 60) == pytest.approx(1e-3)
    assert learning_rate(config, 80) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert learning_rate(config, 100) == pytest.approx(1e-5)
    rates = [learning_rate(config, step) for step in range(60, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


# ---- Only the used prefix moves ----------------------------------------------------------------------------


def a_batch(scale: float, seed: int) -> TrainBatch:
    sampler = PatchSampler([synthetic_image(48, 48, seed=seed)], patch=8, queries=32)
    return sampler.sample(2, (scale, scale), torch.Generator().manual_seed(seed))


def snapshot(model: AnySR, optimizer: torch.optim.Adam) -> dict[str, dict[str, torch.Tensor]]:
    result = {}
    for name, param in model.named_parameters():
        state = optimizer.state[param]
        result[name] = {
            "param": param.detach().clone(),
            "exp_avg": state["exp_avg"].clone(),
            "exp_avg_sq": state["exp_avg_sq"].clone(),
        }
    return result


@pytest.mark.parametrize("slim_decoder", [True, False])
@pytest.mark.parametrize("width", [0.5, 0.7, 0.9])
def test_narrow_step_moves_only_the_used_prefix(width: float, slim_decoder: bool) -> None:
    spec = TINY_SPEC.replace_args(decoder={"slim": slim_decoder})
    config = TrainConfig(stage=2, init_from="unused", bf16=False, channels_last=True, lr=1e-2)
    torch.manual_seed(0)
    model = build_model(spec).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Two full-width steps first, so every weight has momentum that Adam would keep applying.
    train_step(model, optimizer, a_batch(3.5, seed=1), 1.0, config)
    train_step(model, optimizer, a_batch(3.0, seed=2), 1.0, config)
    before = snapshot(model, optimizer)
    loss, prediction = train_step(model, optimizer, a_batch(1.5, seed=3), width, config)
    after = snapshot(model, optimizer)
    assert math.isfinite(loss) and prediction.shape == (2, 32, 3) and not prediction.requires_grad

    regions = used_regions(model, width)
    assert regions, "a narrow width must restrict some parameters"
    if not slim_decoder:
        assert not any(name.startswith("decoder.") for name in regions)
    for name, tensors in before.items():
        for kind, old in tensors.items():
            new = after[name][kind]
            if name not in regions:
                continue
            outside = torch.ones_like(old, dtype=torch.bool)
            for box in regions[name]:
                outside[box] = False
            assert torch.equal(new[outside], old[outside]), f"{name}.{kind} changed outside the width's prefix"
            for box in regions[name]:
                assert not torch.equal(new[box], old[box]), f"{name}.{kind} prefix did not move"


def test_full_width_step_updates_everything() -> None:
    config = TrainConfig(bf16=False, lr=1e-2)
    torch.manual_seed(0)
    model = build_model(TINY_SPEC).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    train_step(model, optimizer, a_batch(2.0, seed=4), 1.0, config)
    # ASE's fc1 gets no gradient while fc2 is zero (the identity initialisation), everything else moves.
    moved = {name for name, param in model.named_parameters() if not torch.equal(param, before[name])}
    assert moved >= {name for name in before if ".ase.fc1." not in name}


# ---- Whole runs: learning and exact resume -----------------------------------------------------------------


def fixed_batch_loss(model: AnySR) -> float:
    """L1 of ``model`` on a batch the run never draws (fixed seed), at full width."""
    batch = a_batch(2.0, seed=99)
    with torch.no_grad():
        prediction = model.eval()(batch.lr, batch.coord, batch.cell, 1.0, batch.scale)
    return float(F.l1_loss(prediction, batch.rgb))


def test_a_short_run_lowers_the_loss(tmp_path: Path, data_dir: Path) -> None:
    config = tiny_config(tmp_path / "run", data_dir, steps=40, scale_max=2.5, queries=64)
    initial = fixed_batch_loss(build_initial_model(config))  # the same initialisation train() starts from
    meta = train(config, quiet=True)
    trained, info = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert meta["step"] == 40 and info.training["step"] == 40
    assert meta["width_counts"] == {"1.0": 40}
    final = fixed_batch_loss(trained)
    assert final < 0.7 * initial, f"loss {initial:.4f} -> {final:.4f}"


def state_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "state.safetensors"))


@pytest.mark.parametrize("stage", [1, 2])
def test_stopping_and_resuming_is_bit_exact(tmp_path: Path, data_dir: Path, stage: int) -> None:
    overrides: dict[str, Any] = {}
    if stage == 2:
        stage1 = build_model(TINY_SPEC.replace_args(encoder={"ase": False}))
        save_checkpoint(tmp_path / "stage1.safetensors", stage1, {"stage": 1})
        overrides = {"stage": 2, "init_from": str(tmp_path / "stage1.safetensors"), "model": TINY, "reset_p": 0.3}
    straight = tiny_config(tmp_path / "straight", data_dir, **overrides)
    split = tiny_config(tmp_path / "split", data_dir, **overrides)

    final_meta = train(straight, quiet=True)
    first = train(split, max_steps=2, quiet=True)
    assert first["step"] == 2
    second = train(split, max_steps=2, quiet=True)
    assert second["step"] == 4
    resumed_meta = train(split, quiet=True)

    assert resumed_meta["step"] == final_meta["step"] == 6
    assert resumed_meta["loss_ema"] == final_meta["loss_ema"]
    assert resumed_meta["width_counts"] == final_meta["width_counts"]
    if stage == 2:
        assert set(final_meta["width_counts"]) != {"1.0"}, "stage 2 run should include narrow widths"
    expected, actual = state_tensors(tmp_path / "straight"), state_tensors(tmp_path / "split")
    assert expected.keys() == actual.keys()
    assert any(key.startswith("optim.") for key in expected)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{key} differs after resume"


def test_a_time_budget_fixes_the_step_count_and_the_schedule_ends_in_it(tmp_path: Path, data_dir: Path) -> None:
    config = tiny_config(tmp_path / "run", data_dir, steps=1_000_000, time_budget_s=1.5, decay_start=0.5)
    meta = train(config, quiet=True)
    calibrated = 20 + 60  # warm-up + measuring window of the calibration
    assert calibrated < meta["steps"] < 1_000_000
    assert meta["step"] == meta["steps"], "the run must stop at the resolved step count, not the cap"
    resolved = dataclasses.replace(config, steps=meta["steps"])
    assert learning_rate(resolved, meta["steps"]) == pytest.approx(config.lr_min)
    saved = TrainConfig.from_dict(json.loads((tmp_path / "run" / "config.json").read_text()))
    assert saved.steps == meta["steps"]
    again = train(config, quiet=True)  # resuming keeps the resolved count instead of recalibrating
    assert again["step"] == again["steps"] == meta["steps"]


def test_a_time_budget_never_raises_the_step_cap(tmp_path: Path, data_dir: Path) -> None:
    config = tiny_config(tmp_path / "run", data_dir, steps=90, time_budget_s=3600.0)
    meta = train(config, quiet=True)
    assert meta["step"] == meta["steps"] == 90


def test_device_auto_and_unavailable_cuda() -> None:
    assert TrainConfig(device="cpu").torch_device().type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig(device="auto").torch_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TrainConfig(device="cuda").torch_device()


def test_budget_calibration_follows_the_rate_until_the_decay_begins(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.training import train as train_module

    clock = [0.0]
    monkeypatch.setattr(train_module.time, "monotonic", lambda: clock[0])
    config = TrainConfig(steps=1_000_000, decay_start=0.5, time_budget_s=100.0)
    calibration = train_module._BudgetCalibration(0, budget_s=100.0, cap=config.steps)
    changes: list[tuple[int, int, int]] = []  # (step, old count, new count)
    step = 0

    def run(steps: int, seconds_per_step: float) -> None:
        nonlocal config, step
        for _ in range(steps):
            step += 1
            clock[0] += seconds_per_step
            found = calibration.observe(step, torch.tensor(0.0), clock[0], config)
            if found is not None:
                changes.append((step, config.steps, found))
                config = dataclasses.replace(config, steps=found)

    run(80, 0.1)  # warm-up, then one 60-step window at 10 steps/s, with 92 s of the budget left
    assert changes == [(80, 1_000_000, 80 + int(0.97 * 92.0 * 10))]
    run(60, 0.05)  # the machine speeds up: the count rises while the lr is still constant
    assert changes[-1][0] == 140 and changes[-1][2] > changes[0][2]
    run(3000, 0.02)
    for at, old, _ in changes:
        assert at < config.decay_start * old, "the count changed after the decay had begun"
    assert step > config.decay_start * config.steps, "the run went past the decay start"
    frozen = config.steps
    run(300, 0.001)  # much faster again, but the decay has begun: the schedule stays
    assert config.steps == frozen
