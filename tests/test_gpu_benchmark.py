"""benchmarks/gpu.py: the GPU benchmark's plumbing, run for real in its CPU smoke mode.

One smoke run for the module (tiny model, tiny sizes, short phases; every section, servers and the
load tester included) and assertions on the one archive it leaves: the layout a GPU session will
unpack, every section present and not failed, and the arithmetic of each table. No timing is
asserted. Without a GPU the NVML readings must be reported unavailable, not fail the run.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu
from benchmarks.gpu_report import render
from models.anysr import build_model
from models.spec import TINY_SPEC


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """(out folder, results.json, unpacked archive root) of one ``--cpu-smoke`` run."""
    out = tmp_path_factory.mktemp("gpu-out")
    assert gpu.main(["--cpu-smoke", "--out", str(out)]) == 0
    unpacked = tmp_path_factory.mktemp("gpu-unpacked")
    with tarfile.open(out / gpu.ARCHIVE) as archive:
        archive.extractall(unpacked, filter="data")
    root = unpacked / "anysr-gpu-bench"
    return out, json.loads((root / "results.json").read_text()), root


def test_one_archive_holds_every_result(smoke):
    out, results, root = smoke
    assert [path.name for path in out.iterdir()] == [gpu.ARCHIVE]  # one file: the device tool returns few
    for relative in (
        "report.md",
        "environment/torch-config.txt",
        "loadtest/results.json",
        "loadtest/report.md",
        "loadtest/nvml.json",
        "psnr/per_image.json",
        "signal/timeline.json",
    ):
        assert (root / relative).is_file(), relative
    assert sorted((root / "profile").glob("*.txt"))
    assert list(results["sections"]) == list(gpu.SECTIONS)
    failed = {name: outcome.get("error") for name, outcome in results["sections"].items() if "result" not in outcome}
    assert not failed
    assert (root / "report.md").read_text() == render(results)
    assert results["command"].startswith("python -m benchmarks.gpu --cpu-smoke")


def test_environment_and_peak_describe_the_host(smoke):
    sections = smoke[1]["sections"]
    environment = sections["environment"]["result"]
    assert environment["device"] == "cpu" and environment["torch"] and environment["cpu_flags"]
    if not environment["nvml"]["available"]:  # no GPU here: said so, not an error
        assert environment["nvml"]["reason"]
    peak = sections["peak"]["result"]
    assert peak["fp32"]["gflops_per_s"] > 0 and peak["bf16"]["gflops_per_s"] > 0


def test_throughput_covers_every_width_scale_and_precision(smoke):
    result = smoke[1]["sections"]["throughput"]["result"]
    widths = build_model(TINY_SPEC).widths
    rows = result["rows"]
    assert len(rows) == 2 * 2 * len(widths)  # precisions x scales x widths
    for row in rows:
        assert row["output_mpx_per_s"] == pytest.approx(row["out_size"][0] * row["out_size"][1] / row["time_s"] / 1e6)
        if row["width"] == 1.0:
            assert row["time_ratio"] == 1.0 and row["flops_ratio"] == 1.0
        else:
            assert 0 < row["flops_ratio"] < 1
    assert [row["block_queries"] for row in result["block_sweep"]] == list(gpu.SMOKE["block_sweep"])


def test_batching_and_psnr_sections(smoke):
    sections = smoke[1]["sections"]
    batching = sections["batching"]["result"]
    assert sorted(batching, key=int) == [str(tile) for tile in gpu.SMOKE["batch_tiles"]]
    for entry in batching.values():
        assert [row["batch"] for row in entry["rows"]] == list(gpu.SMOKE["batch_sizes"])
        assert entry["rows"][0]["gain_vs_batch_1"] == 1.0
    psnr = sections["psnr"]["result"]
    assert {row["dataset"] for row in psnr["rows"]} == {"Set5", "Set14"}
    for row in psnr["rows"]:
        assert row["delta_db"] == pytest.approx(row["bf16_psnr"] - row["fp32_psnr"])


def test_serving_sections_ran_the_real_server_and_load_tester(smoke):
    sections = smoke[1]["sections"]
    loadtest = sections["loadtest"]["result"]
    assert loadtest["returncode"] == 0 and set(loadtest["policies"]) == {"adaptive", "fixed:1.0"}
    assert loadtest["capacity"]["rps"] > 0
    for entry in loadtest["policies"].values():
        assert entry["steps"] and entry["overload"]["offered_rps"] > 0
    assert "available" in loadtest["nvml"]
    signal = sections["signal"]["result"]
    assert signal["signal"] == "anysr_cpu_utilisation_ratio"  # the CPU stands in for the GPU here
    assert set(signal["summary"]) == {"baseline", "hog", "after"}
    assert signal["summary"]["hog"]["requests"] > 0
    assert signal["adaptive_narrowed"] in (True, False)


def test_budget_skips_sections_that_would_not_fit(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        gpu, "section_functions", lambda: {name: lambda run: calls.append(run) or {} for name in gpu.SECTIONS}
    )
    config = gpu.GpuConfig(device="cpu", budget_s=12.0)
    run = gpu.GpuRun(config, None, None, tmp_path / "w.safetensors", {}, tmp_path / "work", tmp_path)
    results = gpu.run_sections(run, ("environment", "loadtest"), tmp_path / "out", "cmd")
    assert "result" in results["sections"]["environment"] and len(calls) == 1
    assert "skipped" in results["sections"]["loadtest"]
    assert (tmp_path / "out" / gpu.ARCHIVE).is_file()
    assert "Skipped:" in (tmp_path / "work" / "report.md").read_text()


def test_a_failed_section_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    def broken(run):
        raise RuntimeError("no card")

    functions = {name: (lambda run: {"fine": True}) for name in gpu.SECTIONS} | {"peak": broken}
    monkeypatch.setattr(gpu, "section_functions", lambda: functions)
    run = gpu.GpuRun(gpu.GpuConfig(device="cpu", smoke=True), None, None, tmp_path, {}, tmp_path / "work", tmp_path)
    results = gpu.run_sections(run, ("peak", "environment"), tmp_path / "out", "cmd")
    assert results["sections"]["peak"]["error"] == "RuntimeError: no card"
    assert results["sections"]["environment"]["result"] == {"fine": True}
    page = render(results)
    assert "Failed after" in page and "no card" in page


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert gpu.main(["--cpu-smoke", "--out", str(tmp_path), "--sections", "peak,bogus"]) == 2
    assert "--sections must be a subset" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
