"""The requests of one load phase, drawn from a workload: which image, which scale, which headers.

Requests are drawn from their own random stream (separate from the arrival times), keyed by the
workload seed and a phase key, so a phase sends the same requests in the same order against every
server and at every rate: policy comparisons differ only in the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.images import ImagePayload, ImagePool
from loadtest.workload import HeaderMix, ScaleMix, Workload

#: Scales are rounded to this many decimals so the query string, the results and a replay agree exactly.
SCALE_DECIMALS = 3


@dataclass(frozen=True)
class PlannedRequest:
    """One request to send: ``POST /upscale?scale=…`` with ``image`` as the body and optional headers."""

    index: int
    image: ImagePayload
    scale: float
    budget: str | None = None
    deadline_ms: str | None = None

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"Content-Type": self.image.content_type, "X-Request-ID": request_id}
        if self.budget is not None:
            headers["X-AnySR-Budget"] = self.budget
        if self.deadline_ms is not None:
            headers["X-AnySR-Deadline-Ms"] = self.deadline_ms
        return headers

    @property
    def deadline_s(self) -> float | None:
        return None if self.deadline_ms is None else float(self.deadline_ms) / 1e3


def phase_rng(seed: int, phase_key: int, stream: int) -> np.random.Generator:
    """An independent generator per (workload seed, phase, stream); stream 0 = requests, 1 = arrivals."""
    return np.random.default_rng([seed, phase_key, stream])


def _pick(weights: np.ndarray, u: float) -> int:
    """Index drawn with probability proportional to ``weights`` from one uniform ``u`` in [0, 1)."""
    cumulative = np.cumsum(weights) / np.sum(weights)
    return min(int(np.searchsorted(cumulative, u, side="right")), len(weights) - 1)


def scale_from_uniform(mix: ScaleMix, u: float) -> float:
    """The scale for one uniform draw ``u``, rounded to ``SCALE_DECIMALS`` without leaving (1, high]."""
    if mix.is_uniform:
        assert mix.low is not None and mix.high is not None
        scale = mix.low + u * (mix.high - mix.low)
    else:
        scale = mix.choices[_pick(np.array([weight for _, weight in mix.choices]), u)][0]
    rounded = round(scale, SCALE_DECIMALS)
    return rounded if rounded > 1.0 else scale


def header_from_uniforms(mix: HeaderMix, u_send: float, u_pick: float) -> str | None:
    """A value of ``mix`` for a share ``mix.share`` of draws, else None."""
    if u_send >= mix.share or not mix.values:
        return None
    return mix.values[min(int(u_pick * len(mix.values)), len(mix.values) - 1)]


#: Uniform draws per request: group, variant, scale, budget (send, pick), deadline (send, pick).
_DRAWS_PER_REQUEST = 7


def plan_requests(workload: Workload, pool: ImagePool, count: int, phase_key: int) -> list[PlannedRequest]:
    """``count`` requests for a phase, deterministic in (workload.seed, phase_key).

    Every request uses a fixed number of draws, so the first *n* requests of a phase are the same
    whatever ``count`` is: a step at a higher rate sends the lower rate's requests and then more.
    """
    rng = phase_rng(workload.seed, phase_key, 0)
    draws = rng.random((count, _DRAWS_PER_REQUEST))
    group_weights = np.asarray(pool.weights, dtype=np.float64)
    requests = []
    for index, (u_group, u_variant, u_scale, u_budget, u_budget_pick, u_deadline, u_deadline_pick) in enumerate(draws):
        group = pool.groups[_pick(group_weights, u_group)]
        image = group[min(int(u_variant * len(group)), len(group) - 1)]
        requests.append(
            PlannedRequest(
                index=index,
                image=image,
                scale=scale_from_uniform(workload.scales, float(u_scale)),
                budget=header_from_uniforms(workload.budget, float(u_budget), float(u_budget_pick)),
                deadline_ms=header_from_uniforms(workload.deadline, float(u_deadline), float(u_deadline_pick)),
            )
        )
    return requests
