"""Cost prediction for admission: when would a request finish, and whom would it make late, at one width?

Pure arithmetic over a :class:`QueueView` (what the batcher holds, in run order) and the measured
FLOP/s per width: no torch, no clock, no probes. The scheduler (``choose_width``) calls
:func:`place` once per candidate width and picks among the answers.

How the queue runs (``server/batcher.py``): start-time fair queuing across requests. Each tile carries
a *tag* in predicted seconds: a request's k-th tile (0-based) is tagged ``V + k·c``, where ``V`` is the
tag of the batch that last started (the queue's virtual time) and ``c`` the request's predicted seconds
per tile; the smallest tag runs first, ties in arrival order. So a new request's first tile runs
after the batch on the device and at most one tile of each request already queued, whatever their
size, and a request of n tiles finishes once every queued tile tagged at most ``V + (n-1)·c`` has run.
With ``fair=False`` (``queue_order=fifo``) every tile of a request shares one tag, in arrival order.

Predicted device seconds are multiplied by a calibration factor learned from measured completions
(``ThroughputTracker.calibration``), so a rate estimate that is off, batches that share the device
with decoding, or later arrivals interleaving with a long request, all show up in the prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedTile:
    """One tile waiting in the batcher, as the predictor sees it."""

    #: Start tag (predicted seconds of virtual time); the queue runs in (tag, arrival) order.
    tag: float
    width: float
    flops: int
    #: Index of its request in :attr:`QueueView.deadlines_s`.
    request: int


@dataclass(frozen=True)
class QueueView:
    """The batcher's queue at one instant: tiles in run order, the batch on the device, deadlines."""

    #: Tag of the batch that started last: a request arriving now has its first tile tagged this.
    virtual_time: float = 0.0
    #: Tiles waiting, in the order they will run.
    tiles: tuple[QueuedTile, ...] = ()
    #: Per queued request: seconds from now until its deadline (None: none known).
    deadlines_s: tuple[float | None, ...] = ()
    #: The batch on the device: its width, FLOPs and how long it has run (0 FLOPs: none).
    running_width: float = 1.0
    running_flops: int = 0
    running_elapsed_s: float = 0.0
    #: False: first in, first out by request (``queue_order=fifo``).
    fair: bool = True


@dataclass(frozen=True)
class Placement:
    """What admitting one request at one width would do (seconds are calibrated predictions)."""

    width: float
    #: Seconds from now until its answer: queue ahead of it, its own tiles, then the per-request overhead.
    finish_s: float
    #: The same on an idle server: its own tiles and the overhead only.
    alone_s: float
    #: Work on the device once its tiles are queued (the running batch's remainder included).
    backlog_s: float
    #: Queued requests that are predicted in time now but would be late with this request admitted.
    made_late: int
    #: Uncalibrated device seconds until its last tile is done (what calibration compares against).
    device_s: float


def rate_for(width: float, rates: Mapping[float, float]) -> float | None:
    """Measured FLOP/s of ``width``; an unmeasured width gets the slowest known rate; None if none is known."""
    rate = rates.get(width, 0.0)
    if rate > 0:
        return rate
    known = [value for value in rates.values() if value > 0]
    return min(known) if known else None


def _seconds(flops: int, width: float, rates: Mapping[float, float]) -> float:
    rate = rate_for(width, rates)
    return 0.0 if rate is None else flops / rate


def _tiles_before(virtual_time: float, cost_s: float, count: int, tag: float) -> int:
    """How many of a new request's ``count`` tiles (tags ``V + k·cost_s``) run before a tile tagged ``tag``."""
    if tag <= virtual_time:
        return 0
    if cost_s <= 0:
        return count
    return min(count, math.ceil((tag - virtual_time) / cost_s))


def place(
    view: QueueView,
    rates: Mapping[float, float],
    width: float,
    flops: int,
    tiles: int,
    *,
    calibration: float = 1.0,
    overhead_s: float = 0.0,
) -> Placement | None:
    """Predict admitting a request of ``tiles`` tiles and ``flops`` FLOPs at ``width``; None if unmeasured."""
    rate = rate_for(width, rates)
    if rate is None:
        return None
    own_s = flops / rate
    tile_s = own_s / max(1, tiles)
    costs = [_seconds(tile.flops, tile.width, rates) for tile in view.tiles]
    running_s = 0.0
    if view.running_flops:
        running_s = max(0.0, _seconds(view.running_flops, view.running_width, rates) - view.running_elapsed_s)
    horizon = view.virtual_time + (tiles - 1) * tile_s if view.fair else math.inf
    ahead_s = running_s
    finished_at: dict[int, tuple[float, float]] = {}  # request → (device seconds until its last tile, that tag)
    done_s = running_s
    for tile, cost in zip(view.tiles, costs):
        done_s += cost
        if tile.tag <= horizon:
            ahead_s += cost
        finished_at[tile.request] = (done_s, tile.tag)
    made_late = 0
    for request, (finish_s, last_tag) in finished_at.items():
        deadline = view.deadlines_s[request] if request < len(view.deadlines_s) else None
        if deadline is None or not view.fair:
            continue
        pushed_s = tile_s * _tiles_before(view.virtual_time, tile_s, tiles, last_tag)
        before = overhead_s + calibration * finish_s
        after = overhead_s + calibration * (finish_s + pushed_s)
        if before <= deadline < after:
            made_late += 1
    device_s = ahead_s + own_s
    return Placement(
        width=width,
        finish_s=overhead_s + calibration * device_s,
        alone_s=overhead_s + calibration * own_s,
        backlog_s=calibration * (running_s + sum(costs) + own_s),
        made_late=made_late,
        device_s=device_s,
    )
