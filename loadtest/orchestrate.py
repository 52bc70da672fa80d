"""Whole runs: one experiment against a server that is already up, or a comparison that starts one server
per policy (``anysr serve --policy …``), runs the same experiment against each, and stops it.

The full-width capacity is measured once, against the first server, and reused for every policy so
that all of them face the same offered loads. The output is the results dict that ``results.py``
writes and ``report.py`` renders, plus every request record.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.calibrate import Capacity
from loadtest.client import SendOptions
from loadtest.experiment import ExperimentPlan, calibrate, run_experiment
from loadtest.images import ImagePool
from loadtest.quality import PsnrTable
from loadtest.records import RequestRecord
from loadtest.results import RESULTS_KIND, RESULTS_VERSION, machine_info, timeline
from loadtest.server_process import ServerOptions, describe_argv, running_server
from loadtest.session import LoadSession
from loadtest.workload import Workload

logger = logging.getLogger("anysr.loadtest")

#: Exit statuses of a server that stopped cleanly on SIGTERM (uvicorn re-raises the signal after draining).
CLEAN_EXITS = (0, -signal.SIGTERM)

#: (policy, phase label, record) for requests.csv.
TaggedRecord = tuple[str, str, RequestRecord]


@dataclass(frozen=True)
class LoadSetup:
    """What every server of a run gets: the workload and its images, how to send, what to measure."""

    workload: Workload
    pool: ImagePool
    send: SendOptions
    plan: ExperimentPlan
    goodput_deadline_s: float = 10.0
    quality: PsnrTable | None = None

    def session(self, url: str) -> LoadSession:
        return LoadSession(url, self.workload, self.pool, self.send, self.goodput_deadline_s, self.quality)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def policy_label(model: dict[str, Any] | None) -> str:
    """The policy a running server reports in ``/v1/model`` (``adaptive``, ``scale-groups``, ``fixed:W``)."""
    policy = (model or {}).get("policy") or {}
    mode = policy.get("mode")
    if mode == "fixed" and policy.get("fixed_width") is not None:
        return f"fixed:{float(policy['fixed_width']):.1f}"
    return str(mode or "unknown")


async def _experiment(
    setup: LoadSetup, url: str, capacity: Capacity | None, calibrate_here: bool
) -> tuple[dict[str, Any] | None, Capacity | None, dict[str, Any], list[tuple[str, list[RequestRecord]]]]:
    async with setup.session(url) as session:
        model = await session.describe_model()
        if calibrate_here:
            capacity = await calibrate(session, setup.plan)
        experiment, records = await run_experiment(session, setup.plan, capacity.rps if capacity else None)
    return model, capacity, experiment, records


def _run_entry(
    policy: str,
    model: dict[str, Any] | None,
    experiment: dict[str, Any],
    records: list[tuple[str, list[RequestRecord]]],
) -> dict[str, Any]:
    overload = experiment["overload"]
    if overload is not None:
        overload["timeline"] = timeline(next(recs for phase, recs in records if phase == "overload"))
    return {
        "policy": policy,
        "model": model,
        "server": {},
        "steps": experiment["steps"],
        "overload": overload,
        "deadline": experiment.get("deadline"),
    }


def _results(
    setup: LoadSetup, command: str, started: str, capacity: Capacity | None, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    if capacity is None:
        capacity_info = None
    elif capacity.concurrency:
        capacity_info = capacity.describe()
    else:
        capacity_info = {"rps": capacity.rps}
    return {
        "kind": RESULTS_KIND,
        "version": RESULTS_VERSION,
        "command": command,
        "started_at": started,
        "finished_at": _now(),
        "machine": machine_info(),
        "workload": setup.workload.describe(),
        "plan": setup.plan.describe(),
        "send": asdict(setup.send) | {"output": asdict(setup.send.output)},
        "goodput_deadline_s": setup.goodput_deadline_s,
        "capacity": capacity_info,
        "quality": setup.quality.describe() if setup.quality else None,
        "runs": runs,
    }


def given_capacity(plan: ExperimentPlan) -> Capacity | None:
    if plan.capacity_rps is None:
        return None
    return Capacity(rps=plan.capacity_rps, concurrency=0, duration_s=0.0, completed=0, failed=0, latency_p50_s=None)


def run_existing(
    setup: LoadSetup, url: str, command: str, label: str | None = None
) -> tuple[dict[str, Any], list[TaggedRecord]]:
    """One experiment against the server at ``url`` (already running); ``label`` defaults to its policy."""
    started = _now()
    capacity = given_capacity(setup.plan)
    calibrate_here = capacity is None and setup.plan.needs_capacity
    model, capacity, experiment, records = asyncio.run(_experiment(setup, url, capacity, calibrate_here))
    policy = label or policy_label(model)
    entry = _run_entry(policy, model, experiment, records)
    entry["server"] = {"url": url}
    tagged = [(policy, phase, record) for phase, recs in records for record in recs]
    return _results(setup, command, started, capacity, [entry]), tagged


def run_comparison(
    setup: LoadSetup, policies: list[str], server: ServerOptions, log_dir: Path, command: str
) -> tuple[dict[str, Any], list[TaggedRecord]]:
    """Start a server per policy, run the same experiment against each, stop it (SIGTERM)."""
    started = _now()
    capacity = given_capacity(setup.plan)
    runs, tagged = [], []
    for policy in policies:
        log_path = log_dir / f"server-{policy.replace(':', '-')}.log"
        logger.info("starting server: policy %s (log %s)", policy, log_path)
        with running_server(policy, server, log_path) as running:
            logger.info("%s ready after %.1f s at %s", policy, running.ready_after_s, running.url)
            calibrate_here = capacity is None and setup.plan.needs_capacity
            model, capacity, experiment, records = asyncio.run(
                _experiment(setup, running.url, capacity, calibrate_here)
            )
        entry = _run_entry(policy, model, experiment, records)
        entry["server"] = {
            "argv": describe_argv(running.argv),
            "ready_after_s": running.ready_after_s,
            "exit_status": running.exit_status,
            "log": str(log_path),
        }
        if running.exit_status not in CLEAN_EXITS:
            logger.warning("server %s exited with status %s; see %s", policy, running.exit_status, log_path)
        runs.append(entry)
        tagged += [(policy, phase, record) for phase, recs in records for record in recs]
    return _results(setup, command, started, capacity, runs), tagged
