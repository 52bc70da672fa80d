"""The ``anysr loadtest`` / ``python -m loadtest`` command line: ``run``, ``compare`` and ``report``.

- ``run --url http://127.0.0.1:8000``: sweep (and optionally overload) a server that is already up;
- ``compare``: start ``anysr serve`` once per policy on a free loopback port, run the same experiment
  against each, stop it; this is the one command behind docs/loadtest-report.md;
- ``report --results DIR/results.json``: rebuild the plots and the Markdown report from saved results.

Results go to ``--out`` (results.json, steps.csv, overload.csv, requests.csv, PNG plots, server logs)
and the report to ``--report`` (default ``OUT/report.md``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtest.orchestrate import LoadSetup

HELP = "open-loop load tests: rate sweeps, policy comparison, overload and recovery, with a Markdown report"

DEFAULT_OUT = Path("docs/loadtest")
DEFAULT_WORKLOAD = Path(__file__).resolve().parent / "workloads" / "uniform-64.yaml"


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD, help="workload spec (YAML or JSON)")
    load.add_argument(
        "--rates",
        default="0.25x,0.5x,1x,1.5x,2x,3x",
        help="sweep rates, comma-separated: requests/s (3) or multiples of the full-width capacity (1.5x); "
        "'none' skips the sweep",
    )
    load.add_argument("--step-s", type=float, default=30.0, help="seconds of offered load per sweep step")
    load.add_argument("--max-requests-per-step", type=int, default=None, help="cap on requests scheduled per step")
    load.add_argument(
        "--arrival", choices=("constant", "poisson"), default=None, help="override the workload's arrivals"
    )
    load.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="requests outstanding at once; beyond: client_dropped (keep it above what the server admits, so "
        "the server's own admission control is what gets measured)",
    )
    load.add_argument(
        "--timeout-s",
        type=float,
        default=120.0,
        help="client-side timeout per request (above the server's request timeout, so its 504s are seen)",
    )
    load.add_argument("--goodput-deadline-s", type=float, default=10.0, help="a success counts as goodput within this")
    load.add_argument("--settle-s", type=float, default=3.0, help="pause between phases")
    load.add_argument("--warmup-requests", type=int, default=4, help="unreported requests sent before the sweep")
    cap = parser.add_argument_group("capacity (the yardstick for 'x' rates and the overload run)")
    cap.add_argument("--capacity", type=float, default=None, help="full-width capacity in requests/s (skips measuring)")
    cap.add_argument(
        "--calibration-s",
        type=float,
        default=20.0,
        help="least seconds of closed-loop capacity measurement (also at least 2 x concurrency completions)",
    )
    cap.add_argument("--calibration-concurrency", type=int, default=8, help="concurrent requests while calibrating")
    cap.add_argument("--calibration-max-s", type=float, default=300.0, help="give up calibrating after this long")
    over = parser.add_argument_group("overload run")
    over.add_argument(
        "--overload-multiple", type=float, default=2.0, help="overload rate / capacity (0: no overload run)"
    )
    over.add_argument("--overload-s", type=float, default=60.0, help="seconds of overload")
    over.add_argument("--baseline-s", type=float, default=15.0, help="seconds of low load before the overload")
    over.add_argument("--recovery-s", type=float, default=30.0, help="seconds of low load after the overload")
    over.add_argument("--low-load", default="0.25x", help="rate of the baseline and recovery segments")
    over.add_argument("--recovery-factor", type=float, default=2.0, help="recovered: latency <= this x baseline p99")
    scenario = parser.add_argument_group("deadline scenario (the overload run without, then with, a deadline header)")
    scenario.add_argument(
        "--deadline-ms",
        type=float,
        default=None,
        help="run the scenario with X-AnySR-Deadline-Ms set to this on every request (default: no scenario)",
    )
    scenario.add_argument(
        "--deadline-multiple", type=float, default=2.0, help="the scenario's overload rate / capacity"
    )
    out = parser.add_argument_group("quality and output")
    out.add_argument("--eval-json", type=Path, default=None, help="`anysr eval` JSON for the PSNR cost column")
    out.add_argument("--eval-dataset", default=None, help="use only this dataset of the eval file")
    out.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for results, CSVs, plots and logs")
    out.add_argument("--report", type=Path, default=None, help="Markdown report path (default OUT/report.md)")
    out.add_argument("--quiet", action="store_true", help="log warnings only")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="loadtest_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="sweep a server that is already running", description="sweep a running server")
    run.add_argument("--url", required=True, help="server base URL; loopback only (127.0.0.0/8, localhost, ::1)")
    run.add_argument("--label", default=None, help="name of this run in the report (default: the server's policy)")
    _add_load_arguments(run)
    compare = sub.add_parser(
        "compare",
        help="start a server per policy and compare them",
        description="start a server per policy and compare",
    )
    compare.add_argument("--policies", default="adaptive,scale-groups,fixed:1.0", help="comma-separated policies")
    compare.add_argument("--allow-untrained", action="store_true", help="pass --allow-untrained to the server")
    compare.add_argument("--weights", type=Path, default=None, help="weights file for the server")
    compare.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server flag (repeatable), e.g. --server-arg=--torch-threads=2",
    )
    compare.add_argument(
        "--per-client-limit",
        type=int,
        default=None,
        help="server --max-requests-per-client (default: --max-in-flight, since the generator is one address "
        "standing in for many clients)",
    )
    compare.add_argument(
        "--server-command", default=None, help="command that starts the server (default: python -m cli serve)"
    )
    compare.add_argument("--ready-timeout-s", type=float, default=600.0, help="longest wait for /readyz")
    _add_load_arguments(compare)
    report = sub.add_parser(
        "report", help="rebuild plots and report from results.json", description="rebuild the report"
    )
    report.add_argument(
        "--results",
        type=Path,
        action="append",
        required=True,
        help="results.json of an earlier run; repeat to put several runs in one report (sections in order)",
    )
    report.add_argument("--report", type=Path, default=None, help="report path (default: beside results.json)")


#: Namespace entries that are not flags of ``anysr loadtest`` (set by cli/main.py or the subparsers).
_NOT_FLAGS = frozenset({"run", "command", "loadtest_command"})


def _display(value: object) -> str:
    """Paths under the working directory are shown relative to it, so the command reads as typed."""
    if isinstance(value, Path) and value.is_absolute():
        try:
            return str(value.relative_to(Path.cwd()))
        except ValueError:
            return str(value)
    return str(value)


def canonical_command(args: argparse.Namespace) -> str:
    """This run as one explicit ``anysr loadtest …`` command line, defaults included, so the results
    and the report say exactly how to reproduce them even if a default changes later."""
    parts = ["anysr", "loadtest", args.loadtest_command]
    for dest, value in vars(args).items():
        if dest in _NOT_FLAGS or value is None or value is False:
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [f"{flag}={item}" for item in value]
        else:
            parts += [flag, _display(value)]
    return shlex.join(parts)


def build_setup(args: argparse.Namespace) -> LoadSetup:
    """Workload, images, sending options, plan and quality table from the parsed flags."""
    import dataclasses

    from loadtest.client import SendOptions
    from loadtest.experiment import DeadlinePlan, ExperimentPlan, OverloadPlan, parse_rate, parse_rates
    from loadtest.images import build_pool
    from loadtest.orchestrate import LoadSetup
    from loadtest.quality import load_psnr_table
    from loadtest.workload import load_workload

    workload = load_workload(args.workload)
    if args.arrival:
        workload = dataclasses.replace(workload, arrival=args.arrival)
    overload = None
    if args.overload_multiple > 0:
        overload = OverloadPlan(
            multiple=args.overload_multiple,
            overload_s=args.overload_s,
            baseline_s=args.baseline_s,
            recovery_s=args.recovery_s,
            low=parse_rate(args.low_load),
            recovery_factor=args.recovery_factor,
        )
    deadline = None
    if args.deadline_ms is not None:
        if not args.deadline_ms > 0 or not args.deadline_multiple > 0:
            raise ValueError(
                f"--deadline-ms and --deadline-multiple must be positive, got {args.deadline_ms} and "
                f"{args.deadline_multiple}"
            )
        deadline = DeadlinePlan(
            deadline_ms=args.deadline_ms,
            overload=OverloadPlan(
                multiple=args.deadline_multiple,
                overload_s=args.overload_s,
                baseline_s=args.baseline_s,
                recovery_s=args.recovery_s,
                low=parse_rate(args.low_load),
                recovery_factor=args.recovery_factor,
            ),
        )
    plan = ExperimentPlan(
        rates=() if args.rates.strip().lower() == "none" else parse_rates(args.rates),
        step_s=args.step_s,
        max_requests_per_step=args.max_requests_per_step,
        settle_s=args.settle_s,
        warmup_requests=args.warmup_requests,
        capacity_rps=args.capacity,
        calibration_s=args.calibration_s,
        calibration_concurrency=args.calibration_concurrency,
        calibration_max_s=args.calibration_max_s,
        overload=overload,
        deadline=deadline,
    )
    send = SendOptions(
        output=workload.output,
        max_in_flight=args.max_in_flight,
        timeout_s=args.timeout_s,
        drain_timeout_s=args.timeout_s + 30.0,  # a request still running past its own timeout is stuck
    )
    quality = None
    if args.eval_json is not None:
        if args.eval_json.is_file():
            quality = load_psnr_table(args.eval_json, args.eval_dataset)
        else:
            logging.getLogger("anysr.loadtest").warning("eval file %s not found: no PSNR cost column", args.eval_json)
    return LoadSetup(workload, build_pool(workload.images, workload.seed), send, plan, args.goodput_deadline_s, quality)


def _finish(results: dict[str, Any], records: list[Any], out: Path, report: Path | None) -> int:
    """Save the results first (the expensive part to redo), then the plots and the report."""
    from loadtest.results import write_results

    path = write_results(out, results, records)
    print(f"results: {path}")

    from loadtest.plots import plot_all
    from loadtest.report import write_report

    plots = plot_all(results, out)
    print(f"report: {write_report([results], [plots], report or out / 'report.md')}")
    return 0


def _print_summary(results: dict[str, Any]) -> None:
    for run in results["runs"]:
        for step in run["steps"]:
            p99 = step["latency_p99_s"]
            print(
                f"{run['policy']:>12} {step['rate']:>8}: offered {step['offered_rps']:6.2f}/s "
                f"achieved {step['achieved_rps']:6.2f}/s goodput {step['goodput_rps']:6.2f}/s "
                f"p50 {step['latency_p50_s'] or 0:6.2f}s p99 {p99 or 0:6.2f}s rejected {step['rejected']} "
                f"errors {step['errors']} widths {step['width_mix']}"
            )
        deadline = run.get("deadline")
        if deadline:
            misses = deadline["with"]["misses"]
            print(
                f"{run['policy']:>12} deadline {deadline['deadline_ms']:g} ms: goodput "
                f"{deadline['without']['segments']['overload']['goodput_rps']:.2f}/s without, "
                f"{deadline['with']['segments']['overload']['goodput_rps']:.2f}/s with; {misses['missed_504']} of "
                f"{misses['admitted']} admitted missed (504)"
            )
        overload = run.get("overload")
        if overload:
            segment = overload["segments"]["overload"]
            print(
                f"{run['policy']:>12} overload: goodput {segment['goodput_rps']:.2f}/s p99 "
                f"{segment['latency_p99_s'] or 0:.2f}s rejected {segment['rejected']} recovery "
                f"{overload['recovery_status']}"
            )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    command = canonical_command(args)
    if args.loadtest_command == "report":
        from loadtest.plots import plot_all
        from loadtest.report import write_report
        from loadtest.results import load_results

        documents = [load_results(path) for path in args.results]
        plots = [plot_all(results, path.parent) for results, path in zip(documents, args.results)]
        target = args.report or args.results[0].parent / "report.md"
        print(f"report: {write_report(documents, plots, target)}")
        return 0
    from loadtest.calibrate import CalibrationError
    from loadtest.server_process import ServerStartError, check_policy
    from loadtest.target import TargetNotAllowed, check_target_url
    from loadtest.workload import WorkloadError

    try:
        url = check_target_url(args.url) if args.loadtest_command == "run" else None
        setup = build_setup(args)
        if url is not None:
            from loadtest.orchestrate import run_existing

            results, records = run_existing(setup, url, command, args.label)
        else:
            from loadtest.orchestrate import run_comparison
            from loadtest.server_process import ServerOptions

            policies = [check_policy(policy) for policy in args.policies.split(",") if policy.strip()]
            if not policies:
                raise ValueError(f"--policies needs at least one policy, got {args.policies!r}")
            server = ServerOptions(
                command=ServerOptions.parse_command(args.server_command),
                allow_untrained=args.allow_untrained,
                weights=args.weights,
                max_requests_per_client=args.per_client_limit or args.max_in_flight,
                extra_args=tuple(args.server_arg),
                ready_timeout_s=args.ready_timeout_s,
            )
            results, records = run_comparison(setup, policies, server, args.out, command)
    except (TargetNotAllowed, WorkloadError, ValueError) as error:
        print(f"anysr loadtest: {error}", file=sys.stderr)
        return 2
    except (ServerStartError, CalibrationError) as error:
        print(f"anysr loadtest: {error}", file=sys.stderr)
        return 1
    _print_summary(results)
    return _finish(results, records, args.out, args.report)
