"""Width scheduling: a pure function of (load snapshot, request, policy) → decision with a reason.

No torch, psutil or pynvml here, and no clock or global state: the probes live in ``server/load.py``,
the FLOPs table arrives precomputed in :class:`WidthRequest`, and hysteresis uses the previous
decision passed in by the caller. So every branch can be tested with hand-built snapshots.

Policies (``SchedulerPolicy.mode``):

- ``adaptive`` (default): idle → full width for every scale (the paper's advice when resources are
  plentiful); moderate load → the scale-group width; heavy load → one width below the group width,
  never narrower than the narrowest served width; overload (queued work past ``overload_queue_s``,
  i.e. arrivals outrun even the heavy-load widths) → the narrowest served width for every scale, so
  the backlog drains instead of growing until requests time out.
- ``scale-groups``: always the paper's scale-group width.
- ``fixed``: always ``fixed_width``.

Request overrides, in order of precedence: a forced width (``X-AnySR-Budget: width=W``) wins outright;
a FLOPs budget (``gflops=G``) picks the widest width within it. Otherwise the policy's width stands.

Then admission (``server/admission.py`` predicts): every request has a deadline, its
``X-AnySR-Deadline-Ms`` or else the server's request timeout. The width is narrowed, within what the
request allows (any narrower served width for adaptive or a deadline header; none for a forced width,
or for fixed and scale-groups without a header), to the widest one that is predicted to finish in time,
pushes no queued request past its deadline, keeps the queue within ``max_queue_s``, and, when others
are already waiting, leaves room for a request like it to arrive next and still be served in time at
the narrowest width; when no width leaves that room, the narrowest that meets the rest is taken (the
overload level's answer). If none meets the rest, the request is refused: :class:`RequestTooCostly`
when it would be late even on an idle server, else :class:`DeadlineUnreachable` or :class:`QueueTooLong`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from models.widths import WIDTHS, check_width, width_for_scale
from server.admission import Placement, QueueView, place

#: Load levels, in increasing order. The level is part of every decision so hysteresis can use it.
IDLE, MODERATE, HEAVY, OVERLOADED = 0, 1, 2, 3
LOAD_LEVEL_NAMES = ("idle", "moderate", "heavy", "overloaded")

#: Every reason a decision can carry (a fixed set, so metrics can create their labels up front).
REASONS: tuple[str, ...] = (
    "forced",
    "budget",
    "deadline",
    "fixed",
    "scale_group",
    "idle",
    "cpu_busy",
    "gpu_busy",
    "queue_busy",
    "queue_overloaded",
    "gpu_memory_low",
)

PolicyMode = Literal["adaptive", "scale-groups", "fixed"]


@dataclass(frozen=True)
class LoadSnapshot:
    """What the scheduler knows about the server's load at one instant (built by ``server/load.py``).

    Utilisations are smoothed fractions in [0, 1]. GPU fields are ``None`` on CPU-only hosts or when
    the GPU cannot be read. Queue fields count tile jobs waiting or running; ``queued_flops`` is split
    by width so the predicted drain time can use each width's own measured throughput.
    """

    cpu_utilisation: float = 0.0
    gpu_utilisation: float | None = None
    gpu_memory_free_bytes: int | None = None
    queue_depth: int = 0
    queued_pixels: int = 0
    queued_flops: Mapping[float, int] = field(default_factory=dict)
    #: Measured FLOP/s per width (warm-up, then an EWMA over real batches).
    flops_per_s: Mapping[float, float] = field(default_factory=dict)
    #: Smoothed per-request time outside the model (decode, plan, stitch, encode), seconds.
    request_overhead_s: float = 0.0
    timestamp_s: float = 0.0
    #: The queue tile by tile, in run order, for admission's predictions.
    queue: QueueView = field(default_factory=QueueView)
    #: Measured / predicted device time of recent requests (``ThroughputTracker.calibration``).
    calibration: float = 1.0


@dataclass(frozen=True)
class WidthRequest:
    """One request, as the scheduler sees it: its scale, its cost per width and the header overrides.

    ``flops`` maps every served width to the FLOPs this request would actually run at that width
    (tiles and their overlap included), computed by the caller from ``models.flops``.
    """

    scale_h: float
    scale_w: float
    flops: Mapping[float, int]
    forced_width: float | None = None
    budget_flops: int | None = None
    #: The ``X-AnySR-Deadline-Ms`` deadline in seconds, if the request gave one.
    deadline_s: float | None = None
    #: The server's request timeout in seconds (None: no limit).
    timeout_s: float | None = None
    #: Tiles the request is cut into (``flops`` covers all of them).
    tiles: int = 1
    #: Seconds the request has already spent (reading, decoding) when the scheduler sees it.
    elapsed_s: float = 0.0

    @property
    def limit_s(self) -> float | None:
        """The tighter of the deadline and the timeout."""
        limits = [value for value in (self.deadline_s, self.timeout_s) if value is not None]
        return min(limits) if limits else None


@dataclass(frozen=True)
class SchedulerPolicy:
    """Policy and thresholds (from settings, validated there). Utilisation thresholds of ``None`` ignore it."""

    mode: PolicyMode = "adaptive"
    fixed_width: float | None = None
    #: Widths this server may choose, narrowest first (a subset of the model's).
    widths: tuple[float, ...] = WIDTHS
    #: The model's whole width set, narrowest first: the scale groups map onto it (the paper's †).
    model_widths: tuple[float, ...] = WIDTHS
    moderate_utilisation: float | None = 0.6
    heavy_utilisation: float | None = 0.9
    #: Predicted seconds of queued work at which the load counts as moderate / heavy.
    moderate_queue_s: float = 0.5
    heavy_queue_s: float = 2.0
    #: Predicted seconds of queued work from which the load counts as overloaded (None: never). Only the
    #: queue can tell overload from heavy load: utilisation saturates at 100% either way.
    overload_queue_s: float | None = 4.0
    #: Free GPU memory below this counts as heavy load.
    min_gpu_free_bytes: int = 1 << 30
    #: Relative margin a signal must fall below a threshold before the level drops (anti-flap).
    hysteresis: float = 0.1
    #: Most predicted seconds of device work the queue may hold with a new request added (None: no cap).
    max_queue_s: float | None = None

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("policy needs at least one width")
        for width in self.widths:
            check_width(width, self.model_widths)
        if tuple(sorted(set(self.widths))) != self.widths:
            raise ValueError(f"policy widths must be unique and sorted ascending, got {self.widths}")
        if self.mode == "fixed":
            if self.fixed_width is None or all(abs(self.fixed_width - w) > 1e-9 for w in self.widths):
                raise ValueError(f"fixed policy width must be one of {self.widths}, got {self.fixed_width}")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {self.hysteresis}")
        if self.overload_queue_s is not None and self.overload_queue_s <= self.heavy_queue_s:
            raise ValueError(
                f"overload_queue_s ({self.overload_queue_s}) must be above heavy_queue_s ({self.heavy_queue_s})"
            )


@dataclass(frozen=True)
class WidthDecision:
    """The scheduler's output: log it, put it in headers, use ``width`` and ``reason`` as metric labels."""

    width: float
    #: FLOPs the request will run at ``width`` (from ``WidthRequest.flops``).
    flops: int
    #: One of :data:`REASONS`.
    reason: str
    #: Load level seen (IDLE, MODERATE, HEAVY, OVERLOADED), after hysteresis; the next call's ``previous``
    #: uses it.
    load_level: int
    #: Predicted seconds until this request's answer (calibrated), when throughput is measured.
    predicted_s: float | None = None
    #: The uncalibrated prediction of its time in the batcher (queue ahead + own tiles), for calibration.
    device_s: float | None = None


class NoWidthFits(Exception):
    """No served width satisfies the request's constraints (the caller maps it to an HTTP error)."""


class BudgetTooSmall(NoWidthFits):
    """The FLOPs budget is below what even the narrowest width costs for this request."""

    def __init__(self, budget_flops: int, minimum_flops: int, minimum_width: float) -> None:
        self.budget_flops = budget_flops
        self.minimum_flops = minimum_flops
        self.minimum_width = minimum_width
        super().__init__(
            f"budget of {budget_flops / 1e9:.3f} GFLOPs is below the {minimum_flops / 1e9:.3f} GFLOPs "
            f"this request needs at the narrowest width ({minimum_width}); raise gflops to at least "
            f"{math.ceil(minimum_flops / 1e6) / 1e3:.3f}"
        )


class DeadlineUnreachable(NoWidthFits):
    """Even the fastest allowed width is predicted to finish after the deadline, because of the load."""

    def __init__(self, deadline_s: float, predicted_s: float, queued_s: float, source: str = "deadline") -> None:
        self.deadline_s = deadline_s
        self.predicted_s = predicted_s
        self.queued_s = queued_s
        super().__init__(
            f"{_limit_name(source)} of {deadline_s:.3f} s cannot be met: the fastest allowed width is predicted "
            f"to take {predicted_s:.3f} s now ({queued_s:.3f} s of it queued work)"
        )


class RequestTooCostly(NoWidthFits):
    """The request alone, at the narrowest width it allows, is predicted to take longer than its limit."""

    def __init__(self, limit_s: float, predicted_s: float, width: float, source: str) -> None:
        self.limit_s = limit_s
        self.predicted_s = predicted_s
        self.width = width
        super().__init__(
            f"this request is predicted to take {predicted_s:.3f} s even on an idle server at the narrowest "
            f"width it allows ({width}); the {_limit_name(source)} allows {limit_s:.3f} s (send a smaller "
            "image or a lower scale)"
        )


class QueueTooLong(NoWidthFits):
    """Admitting the request would overfill the queue or push queued requests past their deadlines."""

    def __init__(self, message: str, backlog_s: float) -> None:
        self.backlog_s = backlog_s
        super().__init__(message)


def _limit_name(source: str) -> str:
    return "X-AnySR-Deadline-Ms deadline" if source == "deadline" else "server's request timeout"


def parse_policy(text: str) -> tuple[PolicyMode, float | None]:
    """Parse ``adaptive``, ``scale-groups`` or ``fixed:W`` into (mode, fixed width)."""
    value = text.strip().lower()
    if value == "adaptive":
        return "adaptive", None
    if value == "scale-groups":
        return "scale-groups", None
    if value.startswith("fixed:"):
        raw = value.split(":", 1)[1]
        try:
            width = float(raw)
        except ValueError:
            width = math.nan
        if not 0.0 < width <= 1.0:
            raise ValueError(f"fixed policy width must be a number in (0, 1], one of the model's widths, got {raw!r}")
        return "fixed", width
    raise ValueError(
        f"policy must be 'adaptive', 'scale-groups' or 'fixed:W' (W one of the model's widths), got {text!r}"
    )


def queued_work_s(load: LoadSnapshot) -> float:
    """Predicted seconds to finish the queued (and running) work, from per-width throughput.

    A width with queued work but no throughput estimate is costed at the slowest known rate, and
    if nothing is known at all the work counts as zero (the server is not warm yet).
    """
    known = [rate for rate in load.flops_per_s.values() if rate > 0]
    if not known:
        return 0.0
    slowest = min(known)
    total = 0.0
    for width, flops in load.queued_flops.items():
        rate = load.flops_per_s.get(width, 0.0)
        total += flops / (rate if rate > 0 else slowest)
    return total


def _level_of(value: float, bounds: tuple[float, ...], hysteresis: float, previous: int | None) -> int:
    """Level of one signal: the number of ascending ``bounds`` it reaches, made sticky by hysteresis.

    Rising is immediate. Falling from the previous level needs the value to drop below that level's
    threshold times (1 − hysteresis). The result is monotone in ``value`` for a fixed ``previous``.
    """
    level = sum(1 for bound in bounds if value >= bound)
    if previous is not None and previous > level:
        sticky = sum(1 for bound in bounds[:previous] if value >= bound * (1.0 - hysteresis))
        level = max(level, sticky)
    return level


def assess_load(load: LoadSnapshot, policy: SchedulerPolicy, previous_level: int | None) -> tuple[int, str]:
    """The load level (IDLE to OVERLOADED) and the signal that set it (a reason for heavy load or overload).

    Signals: utilisation of the serving device (GPU when readable, else CPU; up to heavy), predicted
    queued work (up to overloaded) and free GPU memory (below the floor it counts as heavy). The highest
    level wins; ties name the first signal in that order.
    """
    signals: list[tuple[int, str]] = []
    if load.gpu_utilisation is not None:
        utilisation, busy_reason = load.gpu_utilisation, "gpu_busy"
    else:
        utilisation, busy_reason = load.cpu_utilisation, "cpu_busy"
    if policy.moderate_utilisation is not None and policy.heavy_utilisation is not None:
        signals.append(
            (
                _level_of(
                    utilisation,
                    (policy.moderate_utilisation, policy.heavy_utilisation),
                    policy.hysteresis,
                    previous_level,
                ),
                busy_reason,
            )
        )
    queue_bounds = (policy.moderate_queue_s, policy.heavy_queue_s)
    if policy.overload_queue_s is not None:
        queue_bounds += (policy.overload_queue_s,)
    queue_level = _level_of(queued_work_s(load), queue_bounds, policy.hysteresis, previous_level)
    signals.append((queue_level, "queue_overloaded" if queue_level == OVERLOADED else "queue_busy"))
    if load.gpu_memory_free_bytes is not None and load.gpu_memory_free_bytes < policy.min_gpu_free_bytes:
        signals.append((HEAVY, "gpu_memory_low"))
    level, reason = IDLE, "idle"
    for signal_level, signal_reason in signals:
        if signal_level > level:
            level, reason = signal_level, signal_reason
    return level, reason


def _snap_down(target: float, widths: tuple[float, ...]) -> float:
    """The widest served width not wider than ``target``; the narrowest served width if none is."""
    fitting = [width for width in widths if width <= target + 1e-9]
    return fitting[-1] if fitting else widths[0]


def policy_width(scale: float, level: int, heavy_reason: str, policy: SchedulerPolicy) -> tuple[float, str]:
    """The width and reason the policy alone picks for a (max-side) ``scale`` at a load ``level``."""
    if policy.mode == "fixed":
        assert policy.fixed_width is not None
        return policy.fixed_width, "fixed"
    group_width = _snap_down(width_for_scale(scale, widths=policy.model_widths), policy.widths)
    if policy.mode == "scale-groups":
        return group_width, "scale_group"
    if level == IDLE:
        return policy.widths[-1], "idle"
    if level == MODERATE:
        return group_width, "scale_group"
    if level == OVERLOADED:
        return policy.widths[0], heavy_reason
    narrower = [width for width in policy.widths if width < group_width - 1e-9]
    return (narrower[-1] if narrower else policy.widths[0]), heavy_reason


def choose_width(
    load: LoadSnapshot,
    req: WidthRequest,
    policy: SchedulerPolicy,
    previous: WidthDecision | None = None,
) -> WidthDecision:
    """Pick the width for one request, or refuse it (see the module docstring for the rules).

    Raises :class:`BudgetTooSmall`, :class:`RequestTooCostly`, :class:`DeadlineUnreachable` or
    :class:`QueueTooLong`. Called by the upscale route once per request, just before its tiles are
    queued, with the previous decision (any request's) so the load level does not flap.
    """
    missing = [width for width in policy.widths if width not in req.flops]
    if missing:
        raise ValueError(f"request FLOPs table lacks widths {missing}; it must cover {policy.widths}")
    level, heavy_reason = assess_load(load, policy, previous.load_level if previous is not None else None)
    scale = max(req.scale_h, req.scale_w)

    if req.forced_width is not None:
        width = check_width(req.forced_width, policy.model_widths)
        if width not in policy.widths:
            raise ValueError(f"forced width must be one of the served widths {policy.widths}, got {width}")
        allowed, reason = [width], "forced"
    elif req.budget_flops is not None:
        allowed, reason = list(policy.widths), "budget"
    else:
        width, reason = policy_width(scale, level, heavy_reason, policy)
        narrowable = policy.mode == "adaptive" or req.deadline_s is not None
        allowed = [served for served in policy.widths if served <= width] if narrowable else [width]
    if req.budget_flops is not None:
        affordable = [width for width in allowed if req.flops[width] <= req.budget_flops]
        if not affordable:
            cheapest = min(allowed, key=lambda width: req.flops[width])
            raise BudgetTooSmall(req.budget_flops, req.flops[cheapest], cheapest)
        allowed = affordable
    return _admit(load, req, policy, allowed, reason, level)


def _admit(
    load: LoadSnapshot, req: WidthRequest, policy: SchedulerPolicy, allowed: list[float], reason: str, level: int
) -> WidthDecision:
    """The widest of ``allowed`` that fits the request's limit and the queue (narrowest first in ``allowed``)."""
    placements: list[Placement] = []
    for width in sorted(allowed, reverse=True):
        placement = place(
            load.queue,
            load.flops_per_s,
            width,
            req.flops[width],
            req.tiles,
            calibration=load.calibration,
            overhead_s=load.request_overhead_s,
        )
        if placement is not None:
            placements.append(placement)
    limit = req.limit_s
    if not placements:  # nothing measured yet: a deadline cannot be judged, anything else runs as asked
        if req.deadline_s is not None:
            raise DeadlineUnreachable(req.deadline_s, math.inf, 0.0)
        width = max(allowed)
        return WidthDecision(width=width, flops=req.flops[width], reason=reason, load_level=level)

    def timely(option: Placement) -> bool:
        return limit is None or req.elapsed_s + option.finish_s <= limit

    def fits_queue(option: Placement) -> bool:
        return policy.max_queue_s is None or option.backlog_s <= policy.max_queue_s

    feasible = [option for option in placements if timely(option) and fits_queue(option) and not option.made_late]
    if not feasible:
        _refuse(placements, req, policy, limit)
    chosen = feasible[0]
    others_waiting = bool(load.queue.tiles) or load.queue.running_flops > 0
    if limit is not None and others_waiting:
        # Leave room behind it: a request like this one, arriving next, must still fit at the narrowest width.
        narrowest = placements[-1]
        next_cost_s = narrowest.alone_s
        roomy = [option for option in feasible if option.backlog_s + next_cost_s <= limit]
        chosen = roomy[0] if roomy else feasible[-1]
    if chosen.width < placements[0].width:
        reason = "deadline"
    return WidthDecision(
        width=chosen.width,
        flops=req.flops[chosen.width],
        reason=reason,
        load_level=level,
        predicted_s=req.elapsed_s + chosen.finish_s,
        device_s=chosen.device_s,
    )


def _refuse(placements: list[Placement], req: WidthRequest, policy: SchedulerPolicy, limit: float | None) -> None:
    """Raise the error that says why not even the narrowest allowed width can be admitted."""
    narrowest = placements[-1]
    source = "deadline" if req.deadline_s is not None and req.deadline_s == limit else "timeout"
    if limit is not None and req.elapsed_s + narrowest.alone_s > limit:
        raise RequestTooCostly(limit, req.elapsed_s + narrowest.alone_s, narrowest.width, source)
    if limit is not None and req.elapsed_s + narrowest.finish_s > limit:
        queued = narrowest.finish_s - narrowest.alone_s
        raise DeadlineUnreachable(limit, req.elapsed_s + narrowest.finish_s, queued, source)
    if policy.max_queue_s is not None and narrowest.backlog_s > policy.max_queue_s:
        raise QueueTooLong(
            f"server is at capacity: the queue would hold {narrowest.backlog_s:.3f} s of predicted work with this "
            f"request; at most {policy.max_queue_s:.3f} s are allowed (max_queue_s)",
            narrowest.backlog_s,
        )
    raise QueueTooLong(
        f"server is at capacity: admitting this request would make {narrowest.made_late} queued request(s) "
        "miss their deadlines",
        narrowest.backlog_s,
    )
