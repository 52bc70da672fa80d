"""Measured speed of the model per width, and of the request path around it, as EWMAs.

Seeded by warm-up, then updated after every batch (FLOP/s per width) and every request (seconds spent
outside the model). The scheduler reads both through the load snapshot to predict when a request
would finish. No torch here.
"""

from __future__ import annotations


class ThroughputTracker:
    """FLOP/s per width and per-request overhead seconds, each an exponentially weighted moving average."""

    def __init__(self, smoothing: float) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._flops_per_s: dict[float, float] = {}
        self._overhead_s: float | None = None

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
