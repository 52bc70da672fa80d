"""benchmarks/suite.py: the quick suite's model parts write well-formed JSON, and the page renders from it.

The model parts run for real (``--quick`` sizes, the tiny spec); the server parts need a subprocess
server, so their rendering is checked on records built with the suite's own summary functions.
No timing is asserted: the numbers depend on the machine; their structure and arithmetic do not.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from benchmarks import suite
from benchmarks.bench_server_overhead import summarise
from benchmarks.config import PARTS
from benchmarks.host import RECORD_VERSION, make_record, read_records, write_record
from benchmarks.report import render
from benchmarks.rss import RssSampler
from benchmarks.server_parts import buffer_sizes
from models.spec import TINY_SPEC
from models.widths import WIDTHS

MODEL_PARTS = "widths,reference,batching"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """Run the model parts once for the whole module: (results folder, page, argv)."""
    root = tmp_path_factory.mktemp("bench")
    out, doc = root / "results", root / "benchmarks.md"
    argv = ["--quick", "--model-spec", "tiny", "--only", MODEL_PARTS, "--out", str(out), "--doc", str(doc)]
    argv += ["--threads", "1"]
    assert suite.main(argv) == 0
    return out, doc, argv


def load(out: Path, part: str) -> dict:
    return json.loads((out / f"{part}.json").read_text())


def test_each_model_part_writes_a_record_with_host_and_command(quick_run):
    out, _, argv = quick_run
    assert sorted(path.name for path in out.iterdir()) == ["batching.json", "reference.json", "widths.json"]
    for part in MODEL_PARTS.split(","):
        record = load(out, part)
        assert record["part"] == part and record["record_version"] == RECORD_VERSION
        assert record["command"].startswith("python -m benchmarks.suite --quick")
        assert record["command"].endswith(" ".join(argv[-4:]))
        host = record["host"]
        assert host["cpu_model"] and host["cpu_count"] >= 1 and host["torch_threads"] == 1
        assert len(host["load_average_before"]) == 3 and len(host["load_average_after"]) == 3
        assert host["torch"] and "commit" in host and record["duration_s"] >= 0
        assert record["config"]["spec"] == "tiny"
        assert isinstance(host["cpu_flags"], list)
        peak = host["matmul_peak"]  # measured once in this run: every part carries the same numbers
        assert peak == load(out, "widths")["host"]["matmul_peak"]
        assert peak["fp32"]["gflops_per_s"] > 0 and peak["bf16"]["gflops_per_s"] > 0


def test_widths_record_has_every_case_and_consistent_ratios(quick_run):
    record = load(quick_run[0], "widths")
    cases = record["results"]["cases"]
    assert [(case["mode"], case["scale"]) for case in cases] == [
        (mode, scale) for mode in ("slim", "paper") for scale in (1.5, 2.0, 3.0, 4.0)
    ]
    gaps = []
    for case in cases:
        assert [row["width"] for row in case["rows"]] == list(WIDTHS)
        full = case["rows"][-1]
        assert full["flops_ratio"] == 1.0 and full["time_ratio"] == 1.0
        for row in case["rows"]:
            assert row["time_ratio"] == pytest.approx(row["time_s"]["median"] / full["time_s"]["median"])
            assert row["ratio_gap"] == pytest.approx(row["time_ratio"] - row["flops_ratio"])
            gaps.append(abs(row["ratio_gap"]))
        flops = [row["flops"]["total"] for row in case["rows"]]
        assert flops == sorted(flops) and len(set(flops)) == len(flops)  # narrower is cheaper, strictly
    results = record["results"]
    assert results["max_ratio_gap"] == pytest.approx(max(gaps))
    assert results["within_target"] == (max(gaps) <= results["ratio_tolerance"])
    assert record["config"]["lr_size"] == [16, 16]


def test_reference_record_shows_the_same_image_and_a_speedup(quick_run):
    rows = load(quick_run[0], "reference")["results"]["rows"]
    assert [row["scale"] for row in rows] == [2.0, 4.0]
    for row in rows:
        assert row["out_size"] == [round(16 * row["scale"])] * 2
        assert row["max_abs_diff"] < 1e-4  # same function: only float rounding differs
        assert row["speedup"] == pytest.approx(row["reference_time_s"] / row["upscale_time_s"])


def test_batching_record_throughput_arithmetic(quick_run):
    record = load(quick_run[0], "batching")
    config, results = record["config"], record["results"]
    assert config["halo"] == 2 + 2 * TINY_SPEC.encoder.args["n_blocks"] + 2 and config["call"].endswith("run_batch")
    rows = results["rows"]
    assert [row["batch"] for row in rows] == [1, 2, 4]
    assert rows[0]["gain_vs_batch_1"] == 1.0
    out_pixels = math.prod(config["out_tile_shape"])
    for row in rows:
        assert row["tiles_per_s"] == pytest.approx(row["batch"] / row["time_s"])
        assert row["output_mpx_per_s"] == pytest.approx(row["tiles_per_s"] * out_pixels / 1e6)
    best = max(rows, key=lambda row: row["tiles_per_s"])
    assert (results["best_batch"], results["best_gain"]) == (best["batch"], best["gain_vs_batch_1"])


def test_page_renders_from_the_records_and_report_only_reproduces_it(quick_run):
    out, doc, argv = quick_run
    page = doc.read_text()
    assert page.startswith("# Benchmarks\n")
    assert "python -m benchmarks.suite --quick --model-spec tiny" in page
    headings = ("## Machine", "## Against the machine's peak", "## Time per width vs FLOPs", "## Batching")
    for heading in (*headings, "## Full width against the reference"):
        assert heading in page
    assert "## Server overhead" not in page and "## Peak memory" not in page
    assert "**Smoke run:** `widths`, `reference`, `batching` ran with `--quick`" in page
    tables, previous = [], False
    for line in page.splitlines():
        if line.startswith("|"):
            if not previous:
                tables.append([])
            tables[-1].append(line.count("|"))
        previous = line.startswith("|")
    assert len(tables) == 6  # machine, peak, share of peak, widths, reference, batching
    assert all(len(set(counts)) == 1 for counts in tables)  # every row has as many cells as its header
    widths = load(out, "widths")["results"]
    assert f"**{widths['max_ratio_gap']:.3f}**" in page
    rerendered = out.parent / "again.md"
    assert suite.main(["--report-only", "--out", str(out), "--doc", str(rerendered)]) == 0
    assert rerendered.read_text() == page


def test_server_sections_render_from_summaries():
    rows = [
        {name: value for name, value in zip(("end_to_end_s", "model_s", "queue_s", "decode_s", "encode_s"), sample)}
        for sample in ((1.1, 1.0, 0.01, 0.02, 0.03), (2.2, 2.0, 0.02, 0.02, 0.05))
    ]
    for row in rows:
        row["overhead_s"] = row["end_to_end_s"] - row["model_s"]
    summary = summarise(rows)
    assert summary["overhead_ratio"]["median"] == pytest.approx(0.1)
    model = {
        "untrained": True,
        "source": None,
        "device": "cpu",
        "precision": "fp32",
        "spec": TINY_SPEC.to_dict(),
        "tiling": {"tile_size": 16, "halo": 8},
    }
    buffers = buffer_sizes(model, 40, (160, 160), 0.5, png_bytes=1000, response_bytes=5000)
    assert buffers["request"]["output_canvas_uint8"] == 160 * 160 * 3
    assert buffers["tiles"] > 1 and "tile_outputs_uint8" not in buffers["request"]  # written in place
    assert buffers["live_at_encode"] == 160 * 160 * (3 + 4) + 5000
    common = {"size": [40, 40], "scale": 4.0, "image": "synthetic", "server_argv": []}
    overhead = {"model": model, "summary": summary, "target_ratio": 0.1, "within_target": True, "requests": rows}
    memory = {
        "model": model,
        "width_used": 0.5,
        "tiles": buffers["tiles"],
        "wall_s": 3.0,
        "idle_rss_bytes": 300 << 20,
        "peak_rss_bytes": 400 << 20,
        "peak_minus_idle_bytes": 100 << 20,
        "kernel_peak_rss_bytes": None,
        "buffers": buffers,
    }
    memory_config = {**common, "out_size": [160, 160], "width_header": "X-AnySR-Budget: width=0.5"}
    memory_config |= {"sample_hz": 20.0, "idle_sampling_s": 2.0}
    host = {"cpu_model": "test CPU", "usable_cpus": 2, "cpu_capability": "AVX2", "device": "cpu"}
    host |= {"torch": "x", "torch_threads": 2, "commit": None, "accelerator": None}
    records = {
        "overhead": make_record(
            "overhead", "cmd", {**common, "width": 1.0, "requests": 2, "warmup": 1}, overhead, host, (0, 0, 0), 0.0
        ),
        "memory": make_record("memory", "cmd", memory_config, memory, host, (0, 0, 0), 0.0),
    }
    page = render(records)
    assert "10.0% of model time, within the target of 10%" in page
    assert "raised the server's RSS by 100 MiB" in page and "| 300 | 400 | 100 | n/a | 3.0 |" in page
    assert "Smoke run" not in page


def test_read_records_refuses_a_stale_layout(tmp_path):
    host = {"cpu_model": "x"}
    write_record(tmp_path, make_record("widths", "cmd", {}, {}, host, (0.0, 0.0, 0.0), time.monotonic()))
    assert list(read_records(tmp_path, PARTS)) == ["widths"]
    stale = json.loads((tmp_path / "widths.json").read_text()) | {"record_version": RECORD_VERSION + 1}
    (tmp_path / "widths.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="widths.json is not a version"):
        read_records(tmp_path, PARTS)


@pytest.mark.parametrize(
    "argv",
    [["--only", "widths,bogus"], ["--dtype", "fp16", "--report-only"], ["--memory-width", "0.6", "--report-only"]],
)
def test_bad_options_are_refused_before_any_timing(argv, tmp_path, capsys):
    argv = [*argv, "--out", str(tmp_path / "r"), "--doc", str(tmp_path / "d.md")]
    try:
        status = suite.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert not (tmp_path / "r").exists() and not (tmp_path / "d.md").exists()


def test_rss_sampler_sees_this_process():
    sampler = RssSampler(os.getpid(), rate_hz=100)
    sampler.start()
    time.sleep(0.1)
    sampler.stop()
    assert sampler.samples and all(rss > 0 for _, rss in sampler.samples)
    assert sampler.timeline(sampler.samples[0][0])[0][1] == max(rss for _, rss in sampler.samples)


def test_fairness_section_renders_the_ratios_from_the_record():
    host = {"cpu_model": "test CPU", "usable_cpus": 2, "cpu_capability": "AVX2", "device": "cpu"}
    host |= {"torch": "x", "torch_threads": 2, "commit": None, "accelerator": None}

    def row(order: str, idle: float, loaded: float) -> dict:
        summary = {"p50": idle, "p99": idle * 1.5, "mean": idle}
        busy = {"p50": loaded, "p99": loaded * 1.5, "mean": loaded}
        return {
            "order": order,
            "tiles_large": 16,
            "idle": summary,
            "loaded": busy,
            "ratio_p50": loaded / idle,
            "ratio_p99": loaded / idle,
        }

    config = {"small_size": 128, "large_size": 512, "scale": 2.0, "width": 0.5, "requests": 8}
    config |= {"large_concurrency": 1, "tile_size": 128}
    results = {"rows": [row("fair", 1.0, 1.5), row("fifo", 1.0, 30.0)], "target_ratio_p50": 2.0, "within_target": True}
    page = render({"fairness": make_record("fairness", "cmd", config, results, host, (0, 0, 0), 0.0)})
    assert "| `fair` | 1.00 | 1.50 | 1.50× |" in page and "| `fifo` | 1.00 | 30.00 | 30.00× |" in page
    assert "1.50× its idle p50, within the aim of 2×" in page and "30.0× its idle p50" in page
