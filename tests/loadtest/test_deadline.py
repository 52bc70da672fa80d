"""loadtest/deadline.py: the deadline scenario (the overload run without and with a deadline header), its miss
counts, and its section in the report, against the fake server; and two results documents in one report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loadtest.command import add_arguments, run
from loadtest.deadline import miss_counts
from loadtest.records import RequestRecord

FAKE_SERVER = Path(__file__).resolve().parent / "fake_server.py"
REPO = Path(__file__).resolve().parents[2]


def record(outcome: str, latency_s: float | None) -> RequestRecord:
    finished = None if latency_s is None else latency_s
    return RequestRecord(index=0, scheduled_s=0.0, outcome=outcome, scale=2.0, input_pixels=64, finished_s=finished)


def test_misses_count_504s_among_admitted_and_late_successes():
    records = [record("200", 1.0), record("200", 3.0), record("504", 2.5), record("503", None), record("422", None)]
    assert miss_counts(records, 2000.0) == {"admitted": 3, "missed_504": 1, "late_200": 1, "miss_ratio": 1 / 3}
    assert miss_counts([record("503", None)], 2000.0)["miss_ratio"] is None
    assert miss_counts(records, None)["late_200"] == 0


def test_the_scenario_runs_both_halves_on_one_schedule_and_reports_them(tmp_path: Path) -> None:
    out = tmp_path / "deadline"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["compare", "--server-command", f"{sys.executable} {FAKE_SERVER}", "--policies", "adaptive"]
    argv += ["--capacity", "20", "--rates", "none", "--overload-multiple", "0", "--deadline-ms", "5000"]
    argv += ["--settle-s", "0", "--warmup-requests", "1", "--baseline-s", "0.5", "--overload-s", "0.5"]
    argv += ["--recovery-s", "0.5", "--out", str(out), "--quiet"]
    assert run(parser.parse_args(argv)) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["runs"][0]
    assert entry["steps"] == [] and entry["overload"] is None
    deadline = entry["deadline"]
    assert deadline["deadline_ms"] == 5000 and deadline["spec"]["overload_rps"] == 40.0
    without, with_header = deadline["without"], deadline["with"]
    # The same schedule: as many requests in each segment, in both halves.
    for name in ("baseline", "overload", "recovery"):
        assert without["segments"][name]["scheduled"] == with_header["segments"][name]["scheduled"] > 0
    assert with_header["misses"]["admitted"] == with_header["segments"]["overload"]["succeeded"]
    assert with_header["misses"]["missed_504"] == 0 and deadline["miss_target_met"]
    report = (out / "report.md").read_text()
    assert "Deadline scenario" in report and "adaptive, deadline 5000 ms" in report and "target ≤ 1%: met" in report

    # Two results documents in one report: the main one, then the scenario as a section.
    combined = tmp_path / "combined.md"
    main_results = REPO / "docs" / "loadtest" / "results.json"
    copy = tmp_path / "main" / "results.json"
    copy.parent.mkdir()
    copy.write_text(main_results.read_text())
    args = ["report", "--results", str(copy), "--results", str(out / "results.json"), "--report", str(combined)]
    assert run(parser.parse_args(args)) == 0
    text = combined.read_text()
    assert text.startswith("# AnySR Serve load test")
    assert "## Deadline scenario run" in text and "### Deadline scenario" in text
    assert text.count("## Definitions") == 1 and text.index("## Deadline scenario run") > text.index("## Overload")
