"""server/scheduler.py: (load, scale, header) → decision tables, then properties over a grid of loads."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from models.widths import WIDTHS
from server.admission import QueuedTile, QueueView
from server.scheduler import (
    HEAVY,
    IDLE,
    MODERATE,
    OVERLOADED,
    REASONS,
    BudgetTooSmall,
    DeadlineUnreachable,
    LoadSnapshot,
    QueueTooLong,
    RequestTooCostly,
    SchedulerPolicy,
    WidthDecision,
    WidthRequest,
    assess_load,
    choose_width,
    parse_policy,
    policy_width,
    queued_work_s,
)

#: A made-up cost table shaped like the real one: cost grows with width.
FLOPS = {0.5: 40_000_000_000, 0.7: 55_000_000_000, 0.9: 72_000_000_000, 1.0: 80_000_000_000}
#: 100 GFLOP/s at every width, so FLOPs/1e11 = seconds.
RATES = {width: 1e11 for width in WIDTHS}
POLICY = SchedulerPolicy()


def load(cpu: float = 0.0, queued_s: float = 0.0, gpu: float | None = None, free: int | None = None) -> LoadSnapshot:
    """A snapshot whose queue holds ``queued_s`` seconds of width-1.0 work at RATES (one tile, no deadline)."""
    flops = int(queued_s * RATES[1.0])
    queued = {1.0: flops} if queued_s else {}
    tiles = (QueuedTile(0.0, 1.0, flops, 0),) if queued_s else ()
    return LoadSnapshot(
        cpu_utilisation=cpu,
        gpu_utilisation=gpu,
        gpu_memory_free_bytes=free,
        queued_flops=queued,
        flops_per_s=RATES,
        queue=QueueView(tiles=tiles, deadlines_s=(None,) * len(tiles)),
    )


def request(
    scale: float = 2.0, width: float | None = None, gflops: float | None = None, deadline_ms: float | None = None
):
    return WidthRequest(
        scale_h=scale,
        scale_w=scale,
        flops=FLOPS,
        forced_width=width,
        budget_flops=None if gflops is None else int(gflops * 1e9),
        deadline_s=None if deadline_ms is None else deadline_ms / 1e3,
    )


# (load, scale, header overrides) → (width, reason): the adaptive policy.
ADAPTIVE_TABLE = [
    # idle: full width at every scale
    (load(), 1.2, {}, 1.0, "idle"),
    (load(), 2.0, {}, 1.0, "idle"),
    (load(), 4.0, {}, 1.0, "idle"),
    (load(cpu=0.59), 1.5, {}, 1.0, "idle"),
    # moderate CPU: the scale-group width
    (load(cpu=0.6), 1.5, {}, 0.5, "scale_group"),
    (load(cpu=0.7), 2.3, {}, 0.7, "scale_group"),
    (load(cpu=0.7), 3.0, {}, 0.9, "scale_group"),
    (load(cpu=0.7), 3.9, {}, 1.0, "scale_group"),
    (load(cpu=0.7), 6.0, {}, 1.0, "scale_group"),
    # heavy CPU: one below the group width, never under 0.5
    (load(cpu=0.95), 3.9, {}, 0.9, "cpu_busy"),
    (load(cpu=0.95), 2.3, {}, 0.5, "cpu_busy"),
    (load(cpu=0.95), 1.3, {}, 0.5, "cpu_busy"),
    # queue and GPU signals
    (load(queued_s=0.6), 3.0, {}, 0.9, "scale_group"),
    (load(queued_s=2.5), 3.0, {}, 0.7, "queue_busy"),
    (load(gpu=0.95, cpu=0.1), 4.0, {}, 0.9, "gpu_busy"),
    (load(gpu=0.1, cpu=0.99), 4.0, {}, 1.0, "idle"),  # on a GPU host the GPU, not the CPU, is the device
    (load(gpu=0.1, free=1 << 20), 4.0, {}, 0.9, "gpu_memory_low"),
    # overload (queued work past overload_queue_s = 4 s): the narrowest width at every scale
    (load(queued_s=3.9), 3.9, {}, 0.9, "queue_busy"),
    (load(queued_s=4.0), 3.9, {}, 0.5, "queue_overloaded"),
    (load(queued_s=6.0), 8.0, {}, 0.5, "queue_overloaded"),
    (load(cpu=0.95, queued_s=6.0), 1.3, {}, 0.5, "queue_overloaded"),
    (load(queued_s=6.0), 2.0, {"gflops": 100}, 1.0, "budget"),
    (load(queued_s=6.0), 2.0, {"width": 0.9}, 0.9, "forced"),
    # header overrides
    (load(cpu=0.99), 1.2, {"width": 1.0}, 1.0, "forced"),
    (load(), 4.0, {"width": 0.5}, 0.5, "forced"),
    (load(cpu=0.99), 2.0, {"gflops": 100}, 1.0, "budget"),
    (load(), 2.0, {"gflops": 60}, 0.7, "budget"),
    (load(), 2.0, {"gflops": 40}, 0.5, "budget"),
    # a deadline narrows the policy's width only as far as it must ("deadline" when it did)
    (load(), 2.0, {"deadline_ms": 10_000}, 1.0, "idle"),
    (load(), 2.0, {"deadline_ms": 600}, 0.7, "deadline"),
    (load(cpu=0.7), 3.0, {"deadline_ms": 10_000}, 0.9, "scale_group"),
    (load(queued_s=6.0), 3.9, {"deadline_ms": 10_000}, 0.5, "queue_overloaded"),
    # with others waiting it leaves room for one more like it at 0.5: 0.7 would leave 0.75 + 0.4 > 0.8 s
    (load(queued_s=0.2), 2.0, {"deadline_ms": 800}, 0.5, "deadline"),
    (load(queued_s=0.2), 2.0, {"deadline_ms": 1_300}, 0.7, "deadline"),
    (load(queued_s=0.2), 2.0, {"deadline_ms": 1_500}, 1.0, "idle"),
    (load(), 2.0, {"gflops": 100, "deadline_ms": 600}, 0.7, "deadline"),
    (load(), 2.0, {"gflops": 60, "deadline_ms": 10_000}, 0.7, "budget"),
    (load(), 2.0, {"width": 0.9, "deadline_ms": 800}, 0.9, "forced"),
]


@pytest.mark.parametrize(("snapshot", "scale", "header", "width", "reason"), ADAPTIVE_TABLE)
def test_adaptive_table(snapshot, scale, header, width, reason):
    decision = choose_width(snapshot, request(scale, **header), POLICY)
    assert (decision.width, decision.reason) == (width, reason)
    assert decision.flops == FLOPS[width]


@pytest.mark.parametrize(
    ("scale", "width"),
    [(1.1, 0.5), (1.75, 0.5), (1.76, 0.7), (2.55, 0.7), (2.6, 0.9), (3.25, 0.9), (3.3, 1.0), (8, 1.0)],
)
@pytest.mark.parametrize("cpu", [0.0, 0.99])
def test_scale_groups_policy_ignores_load(scale, width, cpu):
    policy = SchedulerPolicy(mode="scale-groups")
    decision = choose_width(load(cpu=cpu), request(scale), policy)
    assert (decision.width, decision.reason) == (width, "scale_group")


def test_scale_groups_use_the_larger_axis():
    policy = SchedulerPolicy(mode="scale-groups")
    req = WidthRequest(scale_h=1.2, scale_w=3.0, flops=FLOPS)
    assert choose_width(load(), req, policy).width == 0.9


@pytest.mark.parametrize("cpu", [0.0, 0.7, 0.99])
def test_fixed_policy(cpu):
    policy = SchedulerPolicy(mode="fixed", fixed_width=0.7)
    decision = choose_width(load(cpu=cpu), request(4.0), policy)
    assert (decision.width, decision.reason) == (0.7, "fixed")


def test_served_subset_snaps_down_and_forced_outside_is_refused():
    policy = SchedulerPolicy(widths=(0.5, 1.0))
    assert choose_width(load(cpu=0.7), request(3.0), policy).width == 0.5  # group width 0.9 is not served
    assert choose_width(load(), request(3.0), policy).width == 1.0
    with pytest.raises(ValueError, match="served widths"):
        choose_width(load(), request(2.0, width=0.7), policy)


def test_budget_below_narrowest_names_the_minimum():
    with pytest.raises(BudgetTooSmall) as caught:
        choose_width(load(), request(2.0, gflops=39.9), POLICY)
    assert caught.value.minimum_flops == FLOPS[0.5]
    assert caught.value.minimum_width == 0.5
    assert "40.000 GFLOPs" in str(caught.value)


def test_forced_width_over_budget_is_refused():
    with pytest.raises(BudgetTooSmall):
        choose_width(load(), request(2.0, width=1.0, gflops=50), POLICY)


def test_deadline_unreachable_raises_with_prediction():
    with pytest.raises(DeadlineUnreachable) as caught:
        choose_width(load(queued_s=1.0), request(2.0, deadline_ms=1000), POLICY)
    assert caught.value.predicted_s == pytest.approx(1.4)
    assert caught.value.queued_s == pytest.approx(1.0)


def test_deadline_counts_request_overhead():
    snapshot = LoadSnapshot(flops_per_s=RATES, request_overhead_s=0.25)
    assert choose_width(snapshot, request(2.0, deadline_ms=900), POLICY).width == 0.7  # 0.25 + 0.55 ≤ 0.9 < 0.25 + 0.72


def test_deadline_without_measurements_is_unreachable():
    with pytest.raises(DeadlineUnreachable):
        choose_width(LoadSnapshot(), request(2.0, deadline_ms=10_000), POLICY)


def test_a_request_too_costly_even_alone_is_refused_naming_both_times():
    with pytest.raises(RequestTooCostly) as caught:
        choose_width(load(), request(2.0, deadline_ms=300), POLICY)
    assert caught.value.predicted_s == pytest.approx(0.4) and caught.value.limit_s == pytest.approx(0.3)
    assert "0.400 s" in str(caught.value) and "0.300 s" in str(caught.value) and "(0.5)" in str(caught.value)
    # The server's timeout is a limit too, and the message says which limit it was.
    with pytest.raises(RequestTooCostly, match="request timeout allows 0.300 s"):
        choose_width(load(), WidthRequest(2.0, 2.0, FLOPS, timeout_s=0.3), POLICY)


def test_the_timeout_narrows_a_request_without_headers_but_not_a_fixed_policy():
    decision = choose_width(load(), WidthRequest(2.0, 2.0, FLOPS, timeout_s=0.6), POLICY)
    assert (decision.width, decision.reason) == (0.7, "deadline")
    assert decision.predicted_s == pytest.approx(0.55) and decision.device_s == pytest.approx(0.55)
    fixed = SchedulerPolicy(mode="fixed", fixed_width=1.0)
    with pytest.raises(RequestTooCostly, match=r"narrowest width it allows \(1.0\)"):
        choose_width(load(), WidthRequest(2.0, 2.0, FLOPS, timeout_s=0.6), fixed)
    # ...unless the request carries a deadline, which may narrow any policy's width.
    assert choose_width(load(), request(2.0, deadline_ms=600), fixed).width == 0.7


def test_calibration_scales_the_predicted_device_time():
    snapshot = dataclasses.replace(load(queued_s=0.5), calibration=2.0)
    decision = choose_width(snapshot, request(2.0, deadline_ms=5_000), POLICY)
    assert decision.device_s == pytest.approx(0.5 + FLOPS[decision.width] / 1e11)
    assert decision.predicted_s == pytest.approx(2.0 * decision.device_s)
    with pytest.raises(DeadlineUnreachable):  # 2 x (0.5 + 0.4) > 1.5, though 0.9 s alone would fit
        choose_width(snapshot, request(2.0, deadline_ms=1_500), POLICY)


def test_the_queue_cap_counts_predicted_seconds():
    capped = SchedulerPolicy(max_queue_s=1.0)
    assert choose_width(load(queued_s=0.5), request(4.0), capped).width == 0.5  # 0.5 + 0.4 <= 1.0
    with pytest.raises(QueueTooLong, match="at most 1.000 s"):
        choose_width(load(queued_s=0.7), request(4.0), capped)


def test_a_request_that_would_make_a_queued_one_late_is_narrowed_or_refused():
    # A queued request of 4 tiles of 0.25 s, due in 1.2 s; a newcomer's tiles interleave with them.
    tiles = tuple(QueuedTile(0.25 * index, 1.0, int(0.25e11), 0) for index in range(4))
    view = QueueView(tiles=tiles, deadlines_s=(1.2,))
    snapshot = LoadSnapshot(flops_per_s=RATES, queue=view)
    one_tile = {width: flops // 4 for width, flops in FLOPS.items()}  # 0.1-0.2 s
    # Its 0.2 s at 1.0 would push the queued one to 1.2 s... still in time; at 1.3 s it would be late.
    assert choose_width(snapshot, WidthRequest(2.0, 2.0, one_tile), POLICY).width == 1.0
    late = dataclasses.replace(view, deadlines_s=(1.15,))
    snapshot = dataclasses.replace(snapshot, queue=late)
    assert choose_width(snapshot, WidthRequest(2.0, 2.0, one_tile), POLICY).width == 0.7  # +0.1375 s
    too_late = dataclasses.replace(view, deadlines_s=(1.05,))
    with pytest.raises(QueueTooLong, match="1 queued request"):
        choose_width(dataclasses.replace(snapshot, queue=too_late), WidthRequest(2.0, 2.0, one_tile), POLICY)


def test_queued_work_uses_each_widths_rate():
    snapshot = LoadSnapshot(queued_flops={0.5: 10**10, 1.0: 10**10}, flops_per_s={0.5: 1e10, 1.0: 5e9})
    assert queued_work_s(snapshot) == pytest.approx(1.0 + 2.0)
    # A width without a measurement is costed at the slowest known rate.
    snapshot = LoadSnapshot(queued_flops={0.7: 10**10}, flops_per_s={0.5: 1e10, 1.0: 5e9})
    assert queued_work_s(snapshot) == pytest.approx(2.0)
    assert queued_work_s(LoadSnapshot(queued_flops={0.7: 10**10})) == 0.0


def test_hysteresis_holds_the_level_until_well_below_the_threshold():
    previous = WidthDecision(width=0.7, flops=1, reason="scale_group", load_level=MODERATE)
    # 0.58 is below the 0.6 threshold but within 10%: still moderate.
    assert choose_width(load(cpu=0.58), request(2.3), POLICY, previous).reason == "scale_group"
    # 0.53 is below 0.6 · 0.9 = 0.54: back to idle.
    assert choose_width(load(cpu=0.53), request(2.3), POLICY, previous).reason == "idle"
    # Without a previous decision 0.58 is idle.
    assert choose_width(load(cpu=0.58), request(2.3), POLICY).reason == "idle"
    heavy = WidthDecision(width=0.5, flops=1, reason="cpu_busy", load_level=HEAVY)
    assert assess_load(load(cpu=0.85), POLICY, HEAVY) == (HEAVY, "cpu_busy")
    assert assess_load(load(cpu=0.80), POLICY, HEAVY) == (MODERATE, "cpu_busy")
    assert choose_width(load(cpu=0.85), request(2.3), POLICY, heavy).width == 0.5


def test_overload_has_hysteresis_and_can_be_switched_off():
    overloaded = WidthDecision(width=0.5, flops=1, reason="queue_overloaded", load_level=OVERLOADED)
    # 3.7 s is below the 4 s threshold but within 10%: still overloaded; 3.5 s drops to heavy.
    assert assess_load(load(queued_s=3.7), POLICY, OVERLOADED) == (OVERLOADED, "queue_overloaded")
    assert assess_load(load(queued_s=3.5), POLICY, OVERLOADED) == (HEAVY, "queue_busy")
    assert choose_width(load(queued_s=3.7), request(3.9), POLICY, overloaded).width == 0.5
    assert choose_width(load(queued_s=3.5), request(3.9), POLICY, overloaded).width == 0.9
    # Utilisation alone never reaches overload: it cannot tell "busy" from "arrivals outrun capacity".
    assert assess_load(load(cpu=1.0), POLICY, OVERLOADED)[0] == HEAVY
    never = SchedulerPolicy(overload_queue_s=None)
    assert choose_width(load(queued_s=60.0), request(3.9), never).reason == "queue_busy"
    assert choose_width(load(queued_s=60.0), request(3.9), never).width == 0.9
    with pytest.raises(ValueError, match="overload_queue_s"):
        SchedulerPolicy(overload_queue_s=2.0)


def test_a_level_rises_at_once_whatever_the_previous_decision():
    previous = WidthDecision(width=1.0, flops=1, reason="idle", load_level=IDLE)
    assert choose_width(load(cpu=0.95), request(2.3), POLICY, previous).load_level == HEAVY


def test_utilisation_can_be_ignored():
    policy = SchedulerPolicy(moderate_utilisation=None, heavy_utilisation=None)
    assert choose_width(load(cpu=1.0), request(2.0), policy).reason == "idle"
    assert choose_width(load(cpu=1.0, queued_s=3.0), request(2.0), policy).reason == "queue_busy"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("adaptive", ("adaptive", None)), ("Scale-Groups", ("scale-groups", None)), ("fixed:0.7", ("fixed", 0.7))],
)
def test_parse_policy(text, expected):
    assert parse_policy(text) == expected


@pytest.mark.parametrize("text", ["fixed:1.6", "fixed:0", "fixed:", "fixed:abc", "greedy", ""])
def test_parse_policy_rejects(text):
    with pytest.raises(ValueError, match="must be"):
        parse_policy(text)


def test_policy_validation():
    with pytest.raises(ValueError, match="fixed policy width"):
        SchedulerPolicy(mode="fixed", fixed_width=None)
    with pytest.raises(ValueError, match="sorted"):
        SchedulerPolicy(widths=(1.0, 0.5))
    with pytest.raises(ValueError, match="width must be one of"):
        SchedulerPolicy(widths=(0.6,))
    # The width set is the model's: RDN's (0.7, 0.8, 0.9, 1.0) serves 0.8, not 0.5.
    rdn = (0.7, 0.8, 0.9, 1.0)
    assert SchedulerPolicy(widths=(0.8, 1.0), model_widths=rdn).widths == (0.8, 1.0)
    with pytest.raises(ValueError, match="width must be one of"):
        SchedulerPolicy(widths=(0.5,), model_widths=rdn)


def test_scale_groups_map_onto_the_models_own_widths():
    rdn = (0.7, 0.8, 0.9, 1.0)
    policy = SchedulerPolicy(mode="scale-groups", widths=rdn, model_widths=rdn)
    chosen = [policy_width(scale, IDLE, "cpu_busy", policy)[0] for scale in (1.2, 2.0, 3.0, 3.9)]
    assert chosen == [0.7, 0.8, 0.9, 1.0]


def test_missing_flops_for_a_served_width_is_a_bug():
    with pytest.raises(ValueError, match="lacks widths"):
        choose_width(load(), WidthRequest(2.0, 2.0, flops={1.0: 1}), POLICY)


# -- properties over a grid -------------------------------------------------------------------------

CPU_GRID = [0.0, 0.3, 0.55, 0.6, 0.7, 0.85, 0.9, 0.95, 1.0]
QUEUE_GRID = [0.0, 0.3, 0.5, 1.0, 2.0, 3.7, 4.0, 5.0, 30.0]
SCALES = [1.1, 1.5, 1.8, 2.3, 2.6, 3.1, 3.4, 4.0, 6.0, 8.0]
PREVIOUS = [None] + [WidthDecision(1.0, 1, "idle", level) for level in (IDLE, MODERATE, HEAVY, OVERLOADED)]
POLICIES = [
    SchedulerPolicy(),
    SchedulerPolicy(mode="scale-groups"),
    SchedulerPolicy(mode="fixed", fixed_width=0.9),
    SchedulerPolicy(widths=(0.5, 0.9)),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("previous", PREVIOUS)
def test_more_load_never_gives_a_wider_width(policy, previous):
    for scale in SCALES:
        for queued_s in QUEUE_GRID:
            widths = [choose_width(load(cpu, queued_s), request(scale), policy, previous).width for cpu in CPU_GRID]
            assert widths == sorted(widths, reverse=True), (scale, queued_s, widths)
        for cpu in CPU_GRID:
            widths = [choose_width(load(cpu, queued), request(scale), policy, previous).width for queued in QUEUE_GRID]
            assert widths == sorted(widths, reverse=True), (scale, cpu, widths)


@pytest.mark.parametrize("previous", PREVIOUS)
def test_more_queued_work_never_widens_a_deadline_choice(previous):
    for deadline_ms in (300, 600, 800, 1500, 5000):
        widths = []
        for queued_s in QUEUE_GRID:
            try:
                widths.append(choose_width(load(0.0, queued_s), request(2.0, deadline_ms=deadline_ms), POLICY).width)
            except (DeadlineUnreachable, RequestTooCostly):
                widths.append(0.0)
        assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize("gflops", [1, 39.99, 40, 45, 55, 60, 72, 79.9, 80, 1000])
def test_a_budget_is_never_exceeded(gflops):
    budget = int(gflops * 1e9)
    for cpu, queued_s, scale in itertools.product(CPU_GRID, QUEUE_GRID, SCALES):
        try:
            decision = choose_width(load(cpu, queued_s), request(scale, gflops=gflops), POLICY)
        except BudgetTooSmall as error:
            assert min(FLOPS.values()) > budget
            assert error.minimum_flops == min(FLOPS.values())
            continue
        assert decision.flops <= budget
        # ...and it is the widest that fits.
        assert decision.width == max(width for width, flops in FLOPS.items() if flops <= budget)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_decision_is_a_served_width_with_a_known_reason(policy):
    headers = [{}, {"gflops": 70}, {"deadline_ms": 2000}, {"width": policy.widths[0]}]
    for cpu, queued_s, scale, header, previous in itertools.product(CPU_GRID, QUEUE_GRID, SCALES, headers, PREVIOUS):
        snapshot = load(cpu, queued_s, gpu=None if cpu < 0.9 else cpu, free=None if cpu < 0.95 else 1)
        try:
            decision = choose_width(snapshot, request(scale, **header), policy, previous)
        except (BudgetTooSmall, DeadlineUnreachable, RequestTooCostly):
            continue
        assert decision.width in policy.widths
        assert decision.width in WIDTHS
        assert decision.reason in REASONS
        assert decision.load_level in (IDLE, MODERATE, HEAVY, OVERLOADED)
        assert decision.flops == FLOPS[decision.width]
        if decision.predicted_s is not None:
            assert math.isfinite(decision.predicted_s)
