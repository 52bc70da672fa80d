"""benchmarks/gpu_train.py: its plumbing, run for real in CPU smoke mode, so GPU time is never spent on a
typo. Rates are not asserted (noisy, and a CPU's say nothing about a GPU); their arithmetic is."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from benchmarks import gpu_train


@pytest.mark.slow
def test_cpu_smoke_writes_one_archive_with_every_recipe_and_the_concurrent_runs(tmp_path: Path) -> None:
    assert gpu_train.main(["--cpu-smoke", "--out", str(tmp_path), "--steps", "1", "--max-processes", "2"]) == 0
    with tarfile.open(tmp_path / gpu_train.ARCHIVE) as archive:
        names = set(archive.getnames())
        assert {"anysr-gpu-train/results.json", "anysr-gpu-train/report.md"} <= names
        member = archive.extractfile("anysr-gpu-train/results.json")
        assert member is not None
        results = json.load(member)
    runs = results["runs"]
    assert [run["recipe"] for run in runs[:2]] == [recipe.name for recipe in gpu_train.SMOKE_RECIPES]
    assert [len(run["processes"]) for run in runs] == [1, 1, 2]
    assert runs[2]["recipe"] in {runs[0]["recipe"], runs[1]["recipe"]}
    for run in runs:
        assert run["samples_per_s_total"] == pytest.approx(sum(p["samples_per_s"] for p in run["processes"]))
        for process in run["processes"]:
            assert process["steps"] == 1 and process["seconds"] > 0
            assert sum(process["width_counts"].values()) == 2  # warm-up step + timed step, Algorithm 1 widths
    assert results["host"]["cpu_flags"], "the CPU's flags are recorded with every result"
