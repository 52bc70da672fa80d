"""Measured speed of the model per width, and of the request path around it, as EWMAs.

Seeded by warm-up, then updated after every batch (FLOP/s per width) and every request (seconds spent
outside the model, and how long its tiles took against what admission predicted). The scheduler reads
all three through the load snapshot to predict when a request would finish. No torch here.
"""

from __future__ import annotations

#: Bounds on the calibration factor: one freak request (a stalled host, a cold cache) cannot make the
#: server refuse everything, nor a run of over-predictions admit four times too much.
CALIBRATION_RANGE = (0.25, 4.0)
#: Smoothed deviations added to the smoothed ratio: about the 95th percentile for a normal spread.
CALIBRATION_SPREAD = 2.0


class ThroughputTracker:
    """FLOP/s per width and per-request overhead seconds, each an exponentially weighted moving average."""

    def __init__(self, smoothing: float) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._flops_per_s: dict[float, float] = {}
        self._overhead_s: float | None = None
        self._ratio: float | None = None
        self._ratio_deviation = 0.0

    def seed(self, width: float, flops_per_s: float) -> None:
        """Set the starting estimate for ``width`` (warm-up), replacing any earlier value."""
        if flops_per_s <= 0:
            raise ValueError(f"flops_per_s must be positive, got {flops_per_s}")
        self._flops_per_s[width] = flops_per_s

    def observe(self, width: float, flops: int, seconds: float) -> None:
        """Fold in one batch that ran ``flops`` at ``width`` in ``seconds``."""
        if seconds <= 0 or flops <= 0:
            return
        rate = flops / seconds
        previous = self._flops_per_s.get(width)
        self._flops_per_s[width] = rate if previous is None else previous + self.smoothing * (rate - previous)

    def observe_overhead(self, seconds: float) -> None:
        """Fold in one request's time outside the model (decode, plan, stitch, encode)."""
        if seconds < 0:
            return
        previous = self._overhead_s
        self._overhead_s = seconds if previous is None else previous + self.smoothing * (seconds - previous)

    def flops_per_s(self) -> dict[float, float]:
        """A copy of the current per-width estimates."""
        return dict(self._flops_per_s)

    @property
    def overhead_s(self) -> float:
        return self._overhead_s or 0.0

    def observe_prediction(self, predicted_s: float, measured_s: float) -> None:
        """Fold in one request: its tiles took ``measured_s`` in the batcher where ``predicted_s`` was predicted.

        A timed-out request passes the time it waited (a lower bound), so lateness still counts.
        Predictions under a millisecond carry no signal and are skipped.
        """
        if predicted_s < 1e-3 or measured_s < 0:
            return
        ratio = min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], measured_s / predicted_s))
        if self._ratio is None:
            self._ratio = ratio
            return
        error = ratio - self._ratio
        self._ratio += self.smoothing * error
        self._ratio_deviation += self.smoothing * (abs(error) - self._ratio_deviation)

    @property
    def calibration(self) -> float:
        """Factor for predicted device seconds: the smoothed measured/predicted ratio plus twice its smoothed
        deviation, so most requests finish no later than predicted (1.0 before any completion)."""
        if self._ratio is None:
            return 1.0
        value = self._ratio + CALIBRATION_SPREAD * self._ratio_deviation
        return min(CALIBRATION_RANGE[1], max(CALIBRATION_RANGE[0], value))
