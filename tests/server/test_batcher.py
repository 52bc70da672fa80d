"""server/batcher.py: the pure ``next_batch`` policy, then the loop with fake runners."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import pytest
import torch

from server.batcher import Batcher, BatcherClosed, BatchLimits, QueueFull, next_batch
from server.jobs import BatchKey, TileJob, TileResult
from server.metrics import ServerMetrics
from server.throughput import ThroughputTracker

KEY_A = BatchKey(1.0, (8, 8), (16, 16))
KEY_B = BatchKey(0.5, (8, 8), (16, 16))
KEY_BIG = BatchKey(1.0, (20, 20), (40, 40))


def job(key: BatchKey = KEY_A, submitted_s: float = 0.0, future=None, flops: int = 100, tag: int = 0) -> TileJob:
    """A job whose LR window holds ``tag`` so fake runners can tell jobs apart."""
    return TileJob(
        key=key,
        lr=torch.full((3, *key.lr_shape), float(tag)),
        coord_y=torch.zeros(key.out_shape[0]),
        coord_x=torch.zeros(key.out_shape[1]),
        cell=(0.1, 0.1),
        scale=(2.0, 2.0),
        flops=flops,
        future=future,
        submitted_s=submitted_s,
    )


LIMITS = BatchLimits(max_tiles=3, max_pixels=10_000, max_wait_s=0.01)


# -- next_batch -------------------------------------------------------------------------------------


def test_empty_queue_gives_nothing_and_no_retry():
    plan = next_batch(deque(), LIMITS, now=5.0)
    assert plan.jobs == [] and plan.dropped == [] and plan.retry_at_s is None


def test_waits_for_the_oldest_jobs_deadline_when_not_full():
    queue = deque([job(submitted_s=1.0), job(submitted_s=1.004)])
    plan = next_batch(queue, LIMITS, now=1.005)
    assert plan.jobs == []
    assert plan.retry_at_s == pytest.approx(1.01)
    assert len(queue) == 2


def test_runs_once_the_oldest_has_waited_max_wait():
    queue = deque([job(submitted_s=1.0), job(submitted_s=1.004)])
    plan = next_batch(queue, LIMITS, now=1.01)
    assert len(plan.jobs) == 2 and not queue


def test_full_batch_runs_at_once_and_leaves_the_overflow_in_order():
    jobs = [job(submitted_s=1.0, tag=index) for index in range(5)]
    queue = deque(jobs)
    plan = next_batch(queue, LIMITS, now=1.0)
    assert plan.jobs == jobs[:3]
    assert list(queue) == jobs[3:]


def test_pixel_cap_limits_the_batch_but_a_single_oversize_job_still_runs():
    limits = BatchLimits(max_tiles=8, max_pixels=150, max_wait_s=0.01)
    jobs = [job(submitted_s=0.0) for _ in range(3)]  # 64 LR pixels each
    queue = deque(jobs)
    plan = next_batch(queue, limits, now=0.0)
    assert plan.jobs == jobs[:2]  # 128 pixels; a third would make 192 > 150: full, so no wait
    big = job(KEY_BIG, submitted_s=0.0)  # 400 pixels > 150
    plan = next_batch(deque([big]), limits, now=0.0)
    assert plan.jobs == [big]


def test_only_the_oldest_jobs_key_is_batched_and_other_keys_keep_their_places():
    a1, b1, a2, b2, a3 = (job(key, submitted_s=0.0, tag=i) for i, key in enumerate([KEY_A, KEY_B, KEY_A, KEY_B, KEY_A]))
    queue = deque([a1, b1, a2, b2, a3])
    plan = next_batch(queue, LIMITS, now=0.0)
    assert plan.jobs == [a1, a2, a3]
    assert list(queue) == [b1, b2]
    plan = next_batch(queue, LIMITS, now=1.0)
    assert plan.jobs == [b1, b2]


def test_abandoned_jobs_are_dropped_from_anywhere_in_the_queue():
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(4)]
        jobs = [job(submitted_s=0.0, future=future) for future in futures]
        futures[0].cancel()
        futures[2].set_exception(RuntimeError("request gave up"))
        futures[2].exception()  # retrieved, so asyncio does not warn at collection
        queue = deque(jobs)
        plan = next_batch(queue, LIMITS, now=1.0)
        assert plan.dropped == [jobs[0], jobs[2]]
        assert plan.jobs == [jobs[1], jobs[3]]
        assert not queue
    finally:
        loop.close()


def test_all_abandoned_gives_no_batch():
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.cancel()
        plan = next_batch(deque([job(future=future)]), LIMITS, now=0.0)
        assert plan.jobs == [] and len(plan.dropped) == 1 and plan.retry_at_s is None
    finally:
        loop.close()


def test_limits_validate():
    with pytest.raises(ValueError, match="positive"):
        BatchLimits(max_tiles=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        BatchLimits(max_wait_s=-1)


# -- the loop ---------------------------------------------------------------------------------------


class RecordingRunner:
    """Returns each job's tag as a (Th, Tw, 3) uint8 tile and records batch compositions."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, jobs: list[TileJob]) -> list[torch.Tensor]:
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append([int(item.lr[0, 0, 0]) for item in jobs])
        return [torch.full((*item.key.out_shape, 3), int(item.lr[0, 0, 0]), dtype=torch.uint8) for item in jobs]


def make_batcher(run_batch, limits: BatchLimits = LIMITS) -> tuple[Batcher, ServerMetrics, ThroughputTracker]:
    metrics = ServerMetrics()
    throughput = ThroughputTracker(0.5)
    return Batcher(run_batch, limits, metrics, throughput), metrics, throughput


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def new_jobs(count: int, key: BatchKey = KEY_A, start_tag: int = 0) -> tuple[list[TileJob], list[asyncio.Future]]:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(count)]
    jobs = [job(key, future=future, tag=start_tag + index) for index, future in enumerate(futures)]
    return jobs, futures


def test_tiles_of_two_requests_share_a_batch_and_every_future_gets_its_own_result():
    runner = RecordingRunner()

    async def scenario():
        batcher, metrics, throughput = make_batcher(runner, BatchLimits(max_tiles=8, max_wait_s=0.05))
        batcher.start()
        first, first_futures = new_jobs(2, start_tag=0)
        second, second_futures = new_jobs(3, start_tag=10)
        batcher.submit(first)
        batcher.submit(second)
        assert batcher.queue_depth == 5 and batcher.queued_pixels == 5 * 64
        results = await asyncio.gather(*first_futures, *second_futures)
        await batcher.close(timeout_s=1)
        return results, metrics, throughput, batcher

    results, metrics, throughput, batcher = asyncio.run(scenario())
    assert runner.batches == [[0, 10, 1, 11, 12]]  # fair queuing interleaves the two requests' tiles
    assert [int(result.pixels[0, 0, 0]) for result in results] == [0, 1, 10, 11, 12]
    assert all(isinstance(result, TileResult) and result.batch_id == 0 for result in results)
    assert runner.threads and all(name.startswith("anysr-infer") for name in runner.threads)
    assert sample(metrics, "anysr_batch_size_tiles_count") == 1
    assert sample(metrics, "anysr_batch_size_tiles_sum") == 5
    assert sample(metrics, "anysr_flops_total", width="1.0") == 500
    assert sample(metrics, "anysr_queue_wait_seconds_count", width="1.0") == 5
    assert sample(metrics, "anysr_compute_seconds_count", width="1.0") == 1
    assert throughput.flops_per_s()[1.0] > 0
    assert batcher.queue_depth == 0 and batcher.queued_flops() == {}


def test_jobs_with_an_out_view_are_written_in_place_and_carry_no_pixels():
    runner = RecordingRunner()
    canvas = torch.zeros(16, 32, 3, dtype=torch.uint8)

    async def scenario():
        batcher, _, _ = make_batcher(runner, BatchLimits(max_tiles=1, max_wait_s=0.01))
        batcher.start()
        jobs, futures = new_jobs(3, start_tag=5)
        jobs[0].out = canvas[:, :16]
        jobs[1].out = canvas[:, 8:24]  # overlaps the first: the later tile wins, as in the tile plan
        batcher.submit(jobs)
        results = await asyncio.gather(*futures)
        await batcher.close(timeout_s=1)
        return results

    results = asyncio.run(scenario())
    assert runner.batches == [[5], [6], [7]]
    assert results[0].pixels is None and results[1].pixels is None
    assert results[2].pixels is not None and int(results[2].pixels[0, 0, 0]) == 7  # no view: returned
    assert (canvas[:, :8] == 5).all() and (canvas[:, 8:24] == 6).all() and (canvas[:, 24:] == 0).all()


def test_batches_respect_max_tiles_and_keys():
    runner = RecordingRunner()

    async def scenario():
        batcher, _, _ = make_batcher(runner, BatchLimits(max_tiles=2, max_wait_s=0.0))
        batcher.start()
        jobs_a, futures_a = new_jobs(3, KEY_A, start_tag=0)
        jobs_b, futures_b = new_jobs(1, KEY_B, start_tag=20)
        batcher.submit(jobs_a[:1] + jobs_b + jobs_a[1:])
        await asyncio.gather(*futures_a, *futures_b)
        await batcher.close(timeout_s=1)

    asyncio.run(scenario())
    assert runner.batches == [[0, 1], [20], [2]]


def test_a_failing_batch_fails_every_future_with_the_same_error():
    error = RuntimeError("device fell over")

    def failing(jobs):
        raise error

    async def scenario():
        batcher, metrics, _ = make_batcher(failing)
        batcher.start()
        jobs, futures = new_jobs(3)
        batcher.submit(jobs)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close(timeout_s=1)
        return outcomes, batcher

    outcomes, batcher = asyncio.run(scenario())
    assert all(outcome is error for outcome in outcomes)
    assert batcher.queue_depth == 0


def test_a_wrong_output_count_fails_the_batch():
    async def scenario():
        batcher, _, _ = make_batcher(lambda jobs: [torch.zeros(16, 16, 3, dtype=torch.uint8)])
        batcher.start()
        jobs, futures = new_jobs(2)
        batcher.submit(jobs)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close(timeout_s=1)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) and "2 tiles" in str(outcome) for outcome in outcomes)


def test_the_loop_keeps_running_after_a_failure():
    calls = []

    def flaky(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("first batch fails")
        return [torch.zeros(*item.key.out_shape, 3, dtype=torch.uint8) for item in jobs]

    async def scenario():
        batcher, _, _ = make_batcher(flaky, BatchLimits(max_tiles=1, max_wait_s=0.0))
        batcher.start()
        jobs, futures = new_jobs(2)
        batcher.submit(jobs)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await batcher.close(timeout_s=1)
        return outcomes

    first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and isinstance(second, TileResult)


def test_cancelled_jobs_are_dropped_and_counted():
    runner = RecordingRunner(delay_s=0.05)

    async def scenario():
        batcher, metrics, _ = make_batcher(runner, BatchLimits(max_tiles=1, max_wait_s=0.0))
        batcher.start()
        blocker, blocker_futures = new_jobs(1, start_tag=99)
        batcher.submit(blocker)
        await asyncio.sleep(0.01)  # the blocker is now running on the inference thread
        jobs, futures = new_jobs(3, start_tag=0)
        batcher.submit(jobs)
        futures[0].cancel()
        futures[2].cancel()
        await asyncio.gather(*blocker_futures, futures[1])
        await batcher.close(timeout_s=1)
        return metrics, batcher

    metrics, batcher = asyncio.run(scenario())
    assert runner.batches == [[99], [1]]
    assert sample(metrics, "anysr_tiles_dropped_total") == 2
    assert batcher.queue_depth == 0 and batcher.queued_pixels == 0


def test_queue_full_refuses_a_request_whole_but_an_empty_queue_takes_any_size():
    async def scenario():
        batcher, _, _ = make_batcher(RecordingRunner(delay_s=0.05), BatchLimits(max_tiles=1, max_queue_tiles=4))
        batcher.start()
        big, big_futures = new_jobs(6)
        batcher.submit(big)  # empty queue: admitted although 6 > 4
        more, _ = new_jobs(1)
        with pytest.raises(QueueFull, match="at most 4"):
            batcher.submit(more)
        assert batcher.queue_depth == 6
        await asyncio.gather(*big_futures)
        batcher.submit(more)
        await batcher.close(timeout_s=2)

    asyncio.run(scenario())


def test_close_finishes_queued_work_then_refuses_new_work():
    runner = RecordingRunner(delay_s=0.01)

    async def scenario():
        batcher, _, _ = make_batcher(runner, BatchLimits(max_tiles=1, max_wait_s=0.0))
        batcher.start()
        jobs, futures = new_jobs(3)
        batcher.submit(jobs)
        await batcher.close(timeout_s=2)
        assert all(future.done() and not future.cancelled() for future in futures)
        with pytest.raises(BatcherClosed):
            batcher.submit(new_jobs(1)[0])

    asyncio.run(scenario())
    assert runner.batches == [[0], [1], [2]]


def test_close_timeout_fails_what_is_left():
    release = threading.Event()

    def stuck(jobs):
        release.wait(5)
        return [torch.zeros(*item.key.out_shape, 3, dtype=torch.uint8) for item in jobs]

    async def scenario():
        batcher, _, _ = make_batcher(stuck, BatchLimits(max_tiles=1, max_wait_s=0.0))
        batcher.start()
        jobs, futures = new_jobs(2)
        batcher.submit(jobs)
        await asyncio.sleep(0.01)
        await batcher.close(timeout_s=0.05)
        release.set()
        outcome = await asyncio.gather(futures[1], return_exceptions=True)
        return outcome[0]

    assert isinstance(asyncio.run(scenario()), BatcherClosed)


def test_a_lone_job_waits_at_most_max_wait():
    runner = RecordingRunner()

    async def scenario():
        batcher, _, _ = make_batcher(runner, BatchLimits(max_tiles=8, max_wait_s=0.03))
        batcher.start()
        jobs, futures = new_jobs(1)
        started = time.perf_counter()
        batcher.submit(jobs)
        result = await futures[0]
        waited = result.batch_started_s - started
        await batcher.close(timeout_s=1)
        return waited

    waited = asyncio.run(scenario())
    assert 0.025 <= waited < 0.5


def test_closing_runs_a_waiting_batch_at_once_and_close_is_idempotent():
    runner = RecordingRunner()

    async def scenario():
        batcher, _, _ = make_batcher(runner, BatchLimits(max_tiles=8, max_wait_s=60.0))
        batcher.start()
        jobs, futures = new_jobs(1, start_tag=4)
        batcher.submit(jobs)  # alone, it would wait a minute for company
        started = time.perf_counter()
        await batcher.close(timeout_s=5)
        closed_after = time.perf_counter() - started
        await batcher.close(timeout_s=5)
        return await asyncio.gather(*futures), closed_after

    results, closed_after = asyncio.run(scenario())
    assert runner.batches == [[4]] and int(results[0].pixels[0, 0, 0]) == 4
    assert closed_after < 5


def test_close_with_no_time_left_fails_queued_tiles_and_always_ends_the_loop():
    release = threading.Event()

    def blocking_runner(jobs: list[TileJob]) -> list[torch.Tensor]:
        release.wait(5)
        return [torch.zeros((*item.key.out_shape, 3), dtype=torch.uint8) for item in jobs]

    async def scenario():
        batcher, metrics, _ = make_batcher(blocking_runner, BatchLimits(max_tiles=1, max_wait_s=0.0))
        batcher.start()
        jobs, futures = new_jobs(3)
        batcher.submit(jobs)
        await asyncio.sleep(0.05)  # the first tile is running, two are queued
        await batcher.close(timeout_s=0.0)
        release.set()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return outcomes, batcher

    outcomes, batcher = asyncio.run(scenario())
    assert all(isinstance(outcome, BatcherClosed) for outcome in outcomes)  # the running tile's too
    assert batcher.queue_depth == 0


# -- fair queuing ------------------------------------------------------------------------------------


def tagged(tag: float, seq: int, key: BatchKey = KEY_A, submitted_s: float = 0.0) -> TileJob:
    item = job(key, submitted_s=submitted_s, tag=seq)
    item.tag, item.seq = tag, seq
    return item


def test_next_batch_runs_the_smallest_tag_first_then_arrival():
    late_large, early_small, tie_older, tie_newer = tagged(5.0, 0), tagged(1.0, 3), tagged(2.0, 1), tagged(2.0, 2)
    queue = deque([late_large, early_small, tie_older, tie_newer])
    limits = BatchLimits(max_tiles=1, max_wait_s=0.0)
    order = [next_batch(queue, limits, now=1.0).jobs[0] for _ in range(4)]
    assert order == [early_small, tie_older, tie_newer, late_large]


def test_a_batch_waits_on_the_first_job_in_run_order_and_fills_with_its_key_in_run_order():
    first = tagged(0.0, 5, KEY_B, submitted_s=1.0)
    others = [tagged(1.0, 1, KEY_A, submitted_s=0.0), tagged(2.0, 2, KEY_B, submitted_s=0.0)]
    queue = deque([*others, first])
    plan = next_batch(queue, LIMITS, now=1.005)  # the first job (KEY_B) has waited 5 of its 10 ms
    assert plan.jobs == [] and plan.retry_at_s == pytest.approx(1.01)
    plan = next_batch(queue, LIMITS, now=1.01)
    assert plan.jobs == [first, others[1]] and list(queue) == [others[0]]


def test_tiles_of_a_small_request_run_between_those_of_a_large_one():
    """Start-time fair queuing: a one-tile request that arrives while a 6-tile request runs goes next."""
    runner = RecordingRunner(delay_s=0.02)

    async def scenario():
        batcher, _, throughput = make_batcher(runner, BatchLimits(max_tiles=1, max_wait_s=0.0))
        throughput.seed(1.0, 100.0)  # every tile costs 1 s of virtual time (100 FLOPs)
        batcher.start()
        large, large_futures = new_jobs(6, start_tag=0)
        batcher.submit(large)
        await asyncio.sleep(0.03)  # the large request's first tile is running
        small, small_futures = new_jobs(1, start_tag=50)
        batcher.submit(small)
        await asyncio.gather(*large_futures, *small_futures)
        await batcher.close(timeout_s=1)

    asyncio.run(scenario())
    flat = [tag for batch in runner.batches for tag in batch]
    assert flat.index(50) <= 2  # after the running tile and at most one more of the large request
    assert flat[-1] == 5


def test_fifo_order_runs_whole_requests_in_arrival_order():
    runner = RecordingRunner(delay_s=0.02)

    async def scenario():
        metrics, throughput = ServerMetrics(), ThroughputTracker(0.5)
        batcher = Batcher(runner, BatchLimits(max_tiles=1, max_wait_s=0.0), metrics, throughput, fair=False)
        batcher.start()
        large, large_futures = new_jobs(4, start_tag=0)
        batcher.submit(large)
        await asyncio.sleep(0.03)
        small, small_futures = new_jobs(1, start_tag=50)
        batcher.submit(small)
        await asyncio.gather(*large_futures, *small_futures)
        await batcher.close(timeout_s=1)

    asyncio.run(scenario())
    assert [tag for batch in runner.batches for tag in batch] == [0, 1, 2, 3, 50]


def test_queue_view_lists_tiles_in_run_order_with_deadlines_and_the_running_batch():
    release = threading.Event()

    def blocking(jobs):
        release.wait(5)
        return [torch.zeros((*item.key.out_shape, 3), dtype=torch.uint8) for item in jobs]

    async def scenario():
        batcher, _, throughput = make_batcher(blocking, BatchLimits(max_tiles=1, max_wait_s=0.0))
        throughput.seed(1.0, 100.0)
        batcher.start()
        first, first_futures = new_jobs(3)
        batcher.submit(first, deadline_at_s=time.perf_counter() + 10.0)
        await asyncio.sleep(0.05)  # tile 0 (tag 0) is running
        second, second_futures = new_jobs(1)
        batcher.submit(second)
        view = batcher.queue_view()
        release.set()
        await asyncio.gather(*first_futures, *second_futures)
        await batcher.close(timeout_s=1)
        return view

    view = asyncio.run(scenario())
    assert view.fair and view.virtual_time == 0.0
    assert view.running_flops == 100 and view.running_width == 1.0 and view.running_elapsed_s > 0
    # The newcomer (tag 0, the virtual time) runs before the first request's tiles tagged 1 and 2;
    # requests are numbered in run order.
    assert [(tile.tag, tile.request) for tile in view.tiles] == [(0.0, 0), (1.0, 1), (2.0, 1)]
    assert view.deadlines_s[0] is None and 9.0 < view.deadlines_s[1] <= 10.0
