"""The kernel and checkout A/B benchmarks run end to end on tiny sizes and write their records.

No timing is asserted (these machines are shared): the records' structure and that each row ran.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import ab_checkouts, bench_kernels

REPO = Path(__file__).resolve().parents[1]


def test_bench_kernels_quick_writes_one_row_per_step(tmp_path: Path) -> None:
    assert bench_kernels.main(["--quick", "--repeats", "1", "--threads", "1", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "kernels.json").read_text())
    assert record["part"] == "kernels" and record["host"]["cpu_flags"] is not None
    assert {"relu (rows x 256)", "spatial mean (64 ch map)", "ASE gate, whole forward"} <= set(record["results"])
    for row in record["results"].values():
        assert row["old_s"] > 0 and row["new_s"] > 0
        assert row["speedup"] == row["old_s"] / row["new_s"]


def test_ab_checkouts_times_both_sides_in_both_precisions(tmp_path: Path) -> None:
    argv = ["--old", str(REPO), "--pairs", "1", "--rounds", "1", "--size", "16", "--threads", "1"]
    assert ab_checkouts.main([*argv, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "ab_checkouts.json").read_text())["results"]
    for side in ("old", "new"):
        assert {name: len(runs) for name, runs in results[side]["runs_s"].items()} == {"bf16": 1, "fp32": 1}
        medians = results[side]["median_s"]
        assert results[side]["fp32_over_bf16"] == medians["fp32"] / medians["bf16"]
