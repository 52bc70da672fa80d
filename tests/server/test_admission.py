"""server/admission.py: predictions over hand-built queues (fair and first-in-first-out)."""

from __future__ import annotations

import math

import pytest

from server.admission import QueuedTile, QueueView, place, rate_for

#: 1 GFLOP/s at 1.0, 2 GFLOP/s at 0.5: FLOPs / 1e9 = seconds at 1.0.
RATES = {0.5: 2e9, 1.0: 1e9}


def tiles(*specs: tuple[float, int, int]) -> tuple[QueuedTile, ...]:
    """(tag, seconds at width 1.0, request) → queued tiles at width 1.0."""
    return tuple(QueuedTile(tag, 1.0, int(seconds * 1e9), request) for tag, seconds, request in specs)


def test_rates_fall_back_to_the_slowest_known_and_unmeasured_is_none():
    assert rate_for(0.5, RATES) == 2e9
    assert rate_for(0.7, RATES) == 1e9
    assert rate_for(0.5, {}) is None
    assert place(QueueView(), {}, 1.0, 10, 1) is None


def test_an_empty_queue_predicts_the_request_alone_plus_overhead():
    placement = place(QueueView(), RATES, 1.0, int(2e9), 4, overhead_s=0.1)
    assert placement.finish_s == pytest.approx(2.1) and placement.alone_s == pytest.approx(2.1)
    assert placement.backlog_s == pytest.approx(2.0) and placement.device_s == pytest.approx(2.0)
    assert placement.made_late == 0


def test_the_running_batchs_remainder_is_ahead_of_everything():
    view = QueueView(running_width=1.0, running_flops=int(3e9), running_elapsed_s=1.0)
    assert place(view, RATES, 1.0, int(1e9), 1).finish_s == pytest.approx(3.0)  # 2 s left + 1 s
    overdue = QueueView(running_width=1.0, running_flops=int(1e9), running_elapsed_s=5.0)
    assert place(overdue, RATES, 1.0, int(1e9), 1).finish_s == pytest.approx(1.0)


def test_fair_queue_a_small_request_waits_for_one_tile_of_a_large_one_not_all():
    # A 64-tile request of 1 s tiles arrived at virtual time 0; one of its tiles is on the device.
    large = tiles(*((float(k), 1.0, 0) for k in range(1, 64)))
    view = QueueView(virtual_time=0.0, tiles=large, deadlines_s=(None,), running_flops=int(1e9))
    small = place(view, RATES, 1.0, int(0.5e9), 1)
    assert small.finish_s == pytest.approx(1.0 + 0.5)  # the running tile, then its own
    fifo = place(QueueView(tiles=large, deadlines_s=(None,), running_flops=int(1e9), fair=False), RATES, 1.0, 5e8, 1)
    assert fifo.finish_s == pytest.approx(64 + 0.5)
    # A request of 3 tiles of 1 s interleaves with the large one: tags 0, 1, 2 → the large one's tiles 1 and 2 first.
    three = place(view, RATES, 1.0, int(3e9), 3)
    assert three.finish_s == pytest.approx(1.0 + 2.0 + 3.0)
    assert three.backlog_s == pytest.approx(1.0 + 63.0 + 3.0)


def test_calibration_multiplies_device_time_but_not_overhead():
    view = QueueView(tiles=tiles((0.0, 1.0, 0)), deadlines_s=(None,))
    placement = place(view, RATES, 0.5, int(1e9), 1, calibration=1.5, overhead_s=0.2)
    assert placement.device_s == pytest.approx(1.5)
    assert placement.finish_s == pytest.approx(0.2 + 1.5 * 1.5)
    assert placement.alone_s == pytest.approx(0.2 + 1.5 * 0.5)


@pytest.mark.parametrize(
    ("deadline_s", "late"),
    [(None, 0), (10.0, 0), (3.1, 1), (2.0, 0)],  # 2.0: already late without the newcomer, so not its doing
)
def test_a_newcomer_that_pushes_a_queued_request_past_its_deadline_is_counted(deadline_s, late):
    # The queued request: 3 tiles of 1 s tagged 0, 1, 2 (finishes at 3 s); the newcomer's 1 s tile is tagged 0
    # and runs after its first tile, so the queued one finishes at 4 s.
    view = QueueView(tiles=tiles((0.0, 1.0, 0), (1.0, 1.0, 0), (2.0, 1.0, 0)), deadlines_s=(deadline_s,))
    assert place(view, RATES, 1.0, int(1e9), 1).made_late == late


def test_in_first_in_first_out_order_a_newcomer_delays_nobody():
    view = QueueView(tiles=tiles((0.0, 1.0, 0), (0.0, 1.0, 0)), deadlines_s=(2.5,), fair=False)
    placement = place(view, RATES, 1.0, int(1e9), 1)
    assert placement.made_late == 0 and placement.finish_s == pytest.approx(3.0)


def test_predictions_grow_with_the_queue_and_with_width():
    previous = -math.inf
    for queued in range(6):
        view = QueueView(tiles=tiles(*((0.0, 1.0, 0) for _ in range(queued))), deadlines_s=(None,))
        narrow = place(view, RATES, 0.5, int(1e9), 1)
        wide = place(view, RATES, 1.0, int(2e9), 1)
        assert narrow.finish_s < wide.finish_s
        assert narrow.finish_s > previous
        previous = narrow.finish_s
