"""server/runner.py: a whole-image job equals ``model.upscale``; precision, chunking and warm-up."""

from __future__ import annotations

import threading

import pytest
import torch

from models import TINY_SPEC, WIDTHS, build_model
from models.devices import resolve_device
from server.jobs import BatchKey, TileJob
from server.runner import ModelRunner, RunnerConfig
from server.tiling import crop_window, plan_tiles, tile_query
from tests.server.helpers import TINY_META


def whole_job(image: torch.Tensor, out_size: tuple[int, int], width: float) -> TileJob:
    lr_size = (image.shape[1], image.shape[2])
    plan = plan_tiles(lr_size, out_size, tile_size=10_000, halo=0)
    tile = plan.tiles()[0]
    ys, xs, cell = tile_query(plan, tile)
    scale = (out_size[0] / lr_size[0], out_size[1] / lr_size[1])
    key = BatchKey(width, plan.lr_tile_shape, plan.out_tile_shape)
    return TileJob(key, crop_window(image, plan, tile), ys, xs, cell, scale, plan.flops(TINY_META, width))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY_SPEC)


@pytest.mark.parametrize("width", WIDTHS)
def test_whole_image_job_matches_upscale(model, width):
    runner = ModelRunner(model, RunnerConfig(device="cpu", precision="fp32"))
    image = torch.rand(3, 19, 23, generator=torch.Generator().manual_seed(4))
    out = runner.infer([whole_job(image, (45, 50), width)])[0].clamp(0, 1)
    expected = model.upscale(image[None], (45, 50), width)[0]
    assert out.shape == (3, 45, 50)
    assert float((out - expected).abs().max()) <= 1e-5


def test_run_batch_quantises_to_uint8_tiles(model):
    runner = ModelRunner(model, RunnerConfig(device="cpu"))
    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(5))
    jobs = [whole_job(image, (30, 30), 0.7), whole_job(image.flip(-1), (30, 30), 0.7)]
    tiles = runner.run_batch(jobs)
    assert len(tiles) == 2
    assert all(tile.dtype == torch.uint8 and tile.shape == (30, 30, 3) for tile in tiles)
    expected = model.upscale(image[None], (30, 30), 0.7)[0].mul(255).round().to(torch.uint8).permute(1, 2, 0)
    assert int((tiles[0].int() - expected.int()).abs().max()) <= 1


def test_small_query_chunks_give_the_same_result(model):
    image = torch.rand(3, 14, 16, generator=torch.Generator().manual_seed(6))
    jobs = [whole_job(image, (33, 37), 1.0), whole_job(image * 0.5, (33, 37), 1.0)]
    big = ModelRunner(model, RunnerConfig(query_chunk=1 << 20)).infer(jobs)
    small = ModelRunner(model, RunnerConfig(query_chunk=97)).infer(jobs)
    assert torch.allclose(big, small, atol=1e-6)


def test_bf16_on_cpu_is_close_to_fp32(model):
    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(7))
    job = whole_job(image, (24, 24), 1.0)
    fp32 = ModelRunner(model, RunnerConfig(precision="fp32")).infer([job])
    bf16_runner = ModelRunner(model, RunnerConfig(precision="bf16"))
    assert bf16_runner.precision == "bf16"
    assert float((bf16_runner.infer([job]) - fp32).abs().max()) < 0.05


def test_the_runner_in_bf16_computes_the_models_bf16_output(model):
    """The served tile path runs the model's own inference API in the runner's dtype (decoder included)."""
    image = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(8))
    runner = ModelRunner(model, RunnerConfig(precision="bf16"))
    served = runner.infer([whole_job(image, (24, 24), 1.0)])
    direct = model.upscale(
        image[None].contiguous(memory_format=torch.channels_last), (24, 24), 1.0, compute_dtype=torch.bfloat16
    )
    torch.testing.assert_close(served.clamp(0, 1), direct, rtol=0, atol=1e-6)
    fp32 = model.upscale(image[None], (24, 24), 1.0)
    assert not torch.equal(direct, fp32)  # bf16 really ran


def test_mixed_keys_in_one_batch_are_refused(model):
    runner = ModelRunner(model, RunnerConfig())
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="share one key"):
        runner.infer([whole_job(image, (16, 16), 1.0), whole_job(image, (16, 16), 0.5)])


def test_warm_up_measures_every_width(model):
    rates = ModelRunner(model, RunnerConfig()).warm_up((0.5, 1.0), lr_size=8)
    assert set(rates) == {0.5, 1.0} and all(rate > 0 for rate in rates.values())


def test_device_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("meta")


def test_torch_threads_apply_in_the_inference_thread(model):
    before = torch.get_num_threads()
    seen = {}
    try:
        runner = ModelRunner(model, RunnerConfig(torch_threads=1))
        job = whole_job(torch.rand(3, 8, 8), (16, 16), 0.5)

        def work():
            runner.run_batch([job])
            seen["threads"] = torch.get_num_threads()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_runner_runs_exactly_the_flops_it_reports(model, width):
    """The FLOPs header comes from models.flops: the runner must run those MACs.

    The grid decoder's per-image/per-row geometry products (a few dozen FLOPs here, < 0.01%) are the
    only work models.flops leaves out; everything per pixel and per query must match exactly.
    """
    from torch.utils.flop_counter import FlopCounterMode

    image = torch.rand(3, 13, 17)
    job = whole_job(image, (29, 40), width)
    runner = ModelRunner(model, RunnerConfig(device="cpu", precision="fp32", query_chunk=200))
    with FlopCounterMode(display=False) as counter:
        runner.infer([job])
    measured = counter.get_total_flops()
    assert job.flops <= measured <= job.flops * (1 + 1e-4)
