"""The comparison command end to end with the fake server as a subprocess: server start/stop, one
command producing results JSON, CSVs, plots and a report, and the report rebuilt from the JSON alone."""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

import httpx
import pytest

from loadtest.command import add_arguments, run
from loadtest.orchestrate import CLEAN_EXITS
from loadtest.server_process import ServerOptions, ServerStartError, check_policy, running_server, serve_command

FAKE_SERVER = Path(__file__).resolve().parent / "fake_server.py"
FAKE_COMMAND = f"{sys.executable} {FAKE_SERVER}"
REPO = Path(__file__).resolve().parents[2]


def normalised(namespace: dict[str, object]) -> dict[str, object]:
    return {key: value.resolve() if isinstance(value, Path) else value for key, value in namespace.items()}


def test_serve_command_puts_caller_flags_last() -> None:
    options = ServerOptions(
        command=("anysr", "serve"),
        allow_untrained=True,
        weights=Path("w.safetensors"),
        max_requests_per_client=32,
        extra_args=("--torch-threads", "2"),
    )
    assert serve_command("fixed:0.7", 9000, options) == [
        "anysr",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        "--policy",
        "fixed:0.7",
        "--allow-untrained",
        "--weights",
        "w.safetensors",
        "--max-requests-per-client",
        "32",
        "--torch-threads",
        "2",
    ]


def test_running_server_waits_for_ready_and_stops_with_sigterm(tmp_path: Path) -> None:
    options = ServerOptions(command=ServerOptions.parse_command(FAKE_COMMAND), ready_timeout_s=60)
    with running_server("scale-groups", options, tmp_path / "server.log") as server:
        response = httpx.get(f"{server.url}/v1/model", trust_env=False)
        assert response.json()["policy"]["mode"] == "scale-groups"
    assert server.exit_status in CLEAN_EXITS


def test_a_server_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    command = (sys.executable, "-c", "import sys; print('bad weights file'); sys.exit(3)")
    with pytest.raises(ServerStartError, match=r"status 3 before it was ready:\n.*bad weights file"):
        with running_server("adaptive", ServerOptions(command=command), tmp_path / "server.log"):
            pass


def test_compare_writes_results_plots_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [
        "compare",
        "--server-command",
        FAKE_COMMAND,
        "--policies",
        "adaptive,fixed:1.0",
        "--workload",
        str(REPO / "loadtest" / "workloads" / "mixed-headers.yaml"),
        "--capacity",
        "20",
        "--rates",
        "10,1x",
        "--step-s",
        "0.5",
        "--settle-s",
        "0",
        "--warmup-requests",
        "1",
        "--baseline-s",
        "0.5",
        "--overload-s",
        "0.5",
        "--recovery-s",
        "0.5",
        "--out",
        str(out),
        "--quiet",
    ]
    args = parser.parse_args(argv)
    assert run(args) == 0
    results = json.loads((out / "results.json").read_text())
    # The recorded command spells out every option (defaults too) and parses back to the same run.
    assert results["command"].startswith("anysr loadtest compare --policies adaptive,fixed:1.0 ")
    assert "--step-s 0.5" in results["command"] and "--goodput-deadline-s 10.0" in results["command"]
    reparsed = parser.parse_args(shlex.split(results["command"])[2:])
    assert normalised(vars(reparsed)) == normalised(vars(args))
    assert [r["policy"] for r in results["runs"]] == ["adaptive", "fixed:1.0"]
    assert results["capacity"] == {"rps": 20.0}
    for entry in results["runs"]:
        assert [step["rate"] for step in entry["steps"]] == ["10/s", "1x"]
        assert [step["target_rps"] for step in entry["steps"]] == [10.0, 20.0]
        assert entry["server"]["exit_status"] in CLEAN_EXITS
        assert set(entry["overload"]["segments"]) == {"baseline", "overload", "recovery"}
        assert entry["overload"]["spec"]["overload_rps"] == 40.0 and entry["overload"]["spec"]["low_rps"] == 5.0
        assert len(entry["overload"]["timeline"]) == sum(
            seg["scheduled"] for seg in entry["overload"]["segments"].values()
        )
    fixed_widths = {w for step in results["runs"][1]["steps"] for w in step["width_mix"]}
    assert fixed_widths <= {"1.0", "0.7", "0.5"}  # fixed:1.0, except requests that force a width
    with (out / "steps.csv").open() as handle:
        steps = list(csv.DictReader(handle))
    assert len(steps) == 4 and {"policy", "latency_p99_s", "width_1.0", "server_queue_wait_mean_s"} <= set(steps[0])
    with (out / "requests.csv").open() as handle:
        phases = {row["phase"] for row in csv.DictReader(handle)}
    assert phases == {"step0", "step1", "overload"}
    for name in ("latency_throughput", "width_mix", "goodput", "overload_timeline"):
        assert (out / f"{name}.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert results["command"] in report and "### fixed:1.0" in report
    assert "adaptive vs fixed:1.0 during overload: goodput ratio" in report
    assert "![Latency vs throughput](latency_throughput.png)" in report
    assert "adaptive" in capsys.readouterr().out

    rebuilt = tmp_path / "rebuilt.md"
    assert run(parser.parse_args(["report", "--results", str(out / "results.json"), "--report", str(rebuilt)])) == 0
    assert rebuilt.read_text() == report.replace("](", "](out/")


@pytest.mark.parametrize("policy", ["adaptive", "scale-groups", "fixed:1.0", "fixed:0.5", " Fixed:0.7 "])
def test_policies_in_the_server_syntax_are_accepted(policy: str) -> None:
    assert check_policy(policy) == policy.strip().lower()


@pytest.mark.parametrize("policy", ["fast", "fixed", "fixed:", "fixed:wide", "fixed:2.0", "adaptive,fixed:1.0"])
def test_other_policies_are_refused(policy: str) -> None:
    with pytest.raises(ValueError, match="policy must be adaptive, scale-groups or fixed:W"):
        check_policy(policy)
