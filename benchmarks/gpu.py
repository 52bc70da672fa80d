"""The GPU benchmark in one command: every measurement issue 13 asks of a card, in one archive.

    python3 -m benchmarks.gpu --out $OUT                 # on the GPU host: about 6-7 minutes on an H200
    python -m benchmarks.gpu --cpu-smoke --out /tmp/g    # here: tiny model and sizes on the CPU, ~1 minute

Sections, in order (``--sections`` picks some; each is timed and a failure is recorded, not fatal):

- ``environment``: card, driver, CUDA and torch build, host CPU and flags, TF32 switches, git commit;
- ``peak``: fp32 and bf16 matrix-product peak of the card (:mod:`benchmarks.peak`);
- ``throughput``: ``AnySR.upscale`` on 512² inputs at ×2 and ×4, every width, bf16 and fp32: output
  MP/s, GFLOP/s and share of peak, time(w)/time(1.0) against the FLOPs ratio; plus a sweep of the
  decoder's block size at ×2 full width bf16;
- ``batching``: the server runner's throughput for 64² and 128² tiles at batch 1/4/8/16/32;
- ``psnr``: bf16 against fp32 PSNR on Set5 and Set14 at ×2/×3/×4, full and auto width;
- ``profile``: torch.profiler over one upscale and runner batches (kernel time, launches, busy share);
- ``loadtest``: ``loadtest compare`` adaptive vs fixed:1.0 on the card (short sweep, overload at 2x
  capacity) with NVML utilisation and free memory sampled throughout;
- ``signal``: a second process loads the GPU while an adaptive server runs: does the reported
  utilisation rise, and does adaptive narrow?

Everything goes into ONE file, ``<out>/anysr-gpu-bench.tar.gz`` (results.json, report.md, the
load test's results and plots, NVML timelines, profiles, logs), rewritten after every section so a run
cut short still leaves what it measured. ``--budget-s`` (default 450) skips sections that would not
fit. ``--cpu-smoke`` runs the same code on the CPU with a tiny random model, tiny sizes and short
phases, so the plumbing is tested (tests/test_gpu_benchmark.py) before GPU time is spent.

How a GPU session runs it (the device tool; docs/benchmarks.md has the details): copy Set5/Set14 and
the server's missing wheels into an ignored folder with ``tools/gpu_bundle.sh``, then one ``run`` call
with ``carry=[".gpu-bundle"]`` and a timeout that leaves room for a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.config import DEFAULT_WEIGHTS, REPO
from models.anysr import AnySR, build_model
from models.checkpoint import load_checkpoint, save_checkpoint
from models.spec import TINY_SPEC

ARCHIVE = "anysr-gpu-bench.tar.gz"
SECTIONS = ("environment", "peak", "throughput", "batching", "psnr", "profile", "loadtest", "signal")


@dataclass(frozen=True)
class GpuConfig:
    """Sizes and durations of one run: the GPU defaults fit ~6-7 minutes on an H200 (budget 8)."""

    device: str = "cuda"
    smoke: bool = False
    weights: Path = DEFAULT_WEIGHTS
    #: Spec of the random-weight batching model ("product", or "tiny" in smoke runs).
    model_spec: str = "product"
    budget_s: float = 450.0
    #: Seconds kept back for writing the archive when a subprocess section is given its timeout.
    reserve_s: float = 20.0
    repeats: int = 5
    peak_sizes: tuple[int, ...] | None = None
    peak_min_seconds: float = 0.3
    throughput_lr: int = 512
    throughput_scales: tuple[float, ...] = (2.0, 4.0)
    throughput_dtypes: tuple[str, ...] = ("bf16", "fp32")
    #: Decoder queries per block in the throughput table: the server's query_chunk.
    block_queries: int = 65536
    block_sweep: tuple[int, ...] = (4096, 16384, 65536, 262144)
    batch_tiles: tuple[int, ...] = (64, 128)
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32)
    psnr_scales: tuple[float, ...] = (2.0, 3.0, 4.0)
    psnr_max_images: int | None = None
    #: 256² inputs at ×1.1-4: enough device work per request that the card, not only the host, is tested.
    loadtest_workload: Path = REPO / "loadtest" / "workloads" / "gpu-256.yaml"
    loadtest_args: tuple[str, ...] = (
        "--rates=1x,2x",
        "--step-s=8",
        "--calibration-s=8",
        "--overload-multiple=2",
        "--overload-s=15",
        "--baseline-s=5",
        "--recovery-s=10",
        "--settle-s=2",
        "--warmup-requests=8",
        "--ready-timeout-s=180",
    )
    #: Extra ``anysr serve`` flags for every server the run starts (load test and signal check).
    server_args: tuple[str, ...] = ()
    nvml_interval_s: float = 0.25
    #: Seconds of the signal check's phases: baseline, competing process, after.
    signal_phases_s: tuple[float, float, float] = (8.0, 12.0, 6.0)
    signal_size: int = 128
    signal_scale: float = 2.0
    signal_gap_s: float = 0.2
    ready_timeout_s: float = 180.0


#: ``--cpu-smoke``: the same sections on the CPU with a tiny model, in about a minute.
SMOKE = {
    "device": "cpu",
    "smoke": True,
    "model_spec": "tiny",
    "repeats": 1,
    "peak_sizes": (64, 128),
    "peak_min_seconds": 0.0,
    "throughput_lr": 16,
    "block_queries": 1024,
    "block_sweep": (256, 1024),
    "batch_tiles": (8, 16),
    "batch_sizes": (1, 4),
    "psnr_scales": (2.0,),
    "psnr_max_images": 1,
    "loadtest_workload": REPO / "loadtest" / "workloads" / "uniform-64.yaml",
    "loadtest_args": (
        "--rates=1x",
        "--step-s=1",
        "--calibration-s=1",
        "--calibration-concurrency=2",
        "--overload-multiple=2",
        "--overload-s=1",
        "--baseline-s=0.5",
        "--recovery-s=1",
        "--settle-s=0.1",
        "--warmup-requests=1",
        "--ready-timeout-s=120",
    ),
    "server_args": ("--torch-threads=1", "--warmup-size=16"),
    "signal_phases_s": (1.5, 2.0, 1.5),
    "signal_size": 32,
    "signal_gap_s": 0.05,
}


@dataclass
class GpuRun:
    """One run's state, handed to every section: config, device, model, folders, the measured peak."""

    config: GpuConfig
    device: torch.device
    model: AnySR
    weights_path: Path
    model_facts: dict[str, Any]
    work_dir: Path
    shared_dir: Path
    started: float = field(default_factory=time.monotonic)
    peak: dict[str, Any] | None = None

    def remaining_s(self) -> float:
        return self.config.budget_s - (time.monotonic() - self.started)

    def write_file(self, relative: str, text: str) -> Path:
        path = self.work_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def lr_image(self, side: int) -> torch.Tensor:
        """A (1, 3, side, side) crop of Set14's baboon (resized up when smaller) on the device; synthetic
        without the shared data. Timing does not depend on the content, but outputs stay photo-like."""
        from benchmarks.bench_server_overhead import bench_image
        from benchmarks.served_precision import decode_png

        with _shared_env(self.shared_dir):
            return decode_png(bench_image(side)[0]).to(self.device)


@contextlib.contextmanager
def _shared_env(shared: Path) -> Iterator[None]:
    """Point ``ANYSR_SHARED_DIR`` at the run's data folder for the helpers that read it."""
    saved = os.environ.get("ANYSR_SHARED_DIR")
    os.environ["ANYSR_SHARED_DIR"] = str(shared)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ANYSR_SHARED_DIR", None)
        else:
            os.environ["ANYSR_SHARED_DIR"] = saved


def section_functions() -> dict[str, Callable[[GpuRun], dict[str, Any]]]:
    from benchmarks import gpu_model, gpu_serving

    return {
        "environment": gpu_model.section_environment,
        "peak": gpu_model.section_peak,
        "throughput": gpu_model.section_throughput,
        "batching": gpu_model.section_batching,
        "psnr": gpu_model.section_psnr,
        "profile": gpu_model.section_profile,
        "loadtest": gpu_serving.section_loadtest,
        "signal": gpu_serving.section_signal,
    }


#: Rough seconds each section takes on an H200 (budget planning; a section is skipped if it will not fit).
ESTIMATE_S = {
    "environment": 5,
    "peak": 10,
    "throughput": 40,
    "batching": 40,
    "psnr": 60,
    "profile": 15,
    "loadtest": 200,
    "signal": 50,
}


def shared_dir() -> Path:
    return Path(os.environ.get("ANYSR_SHARED_DIR", REPO / ".." / "shared"))


def smoke_data(work_dir: Path) -> Path:
    """Two synthetic 'datasets' of one structured 48² image each: what smoke runs score."""
    root = work_dir / "smoke-data"
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:48, 0:48] / 48
    for name in ("Set5", "Set14"):
        folder = root / "datasets" / name
        folder.mkdir(parents=True, exist_ok=True)
        smooth = np.stack([ys, xs, 0.5 + 0.5 * np.sin(9 * xs * ys)], axis=-1) * 220
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "synthetic.png")
    return root


def load_model(config: GpuConfig, work_dir: Path) -> tuple[AnySR, Path, dict[str, Any]]:
    """The shipped weights on the device; in smoke runs a seeded tiny model saved as a file (servers load it)."""
    device = torch.device(config.device)
    if config.smoke:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(TINY_SPEC)
        path = work_dir / "tiny.safetensors"
        save_checkpoint(path, model)
        return model.to(device).eval(), path, {"weights": "tiny random (smoke)", "spec": "tiny"}
    model, info = load_checkpoint(config.weights, map_location=device)
    return model, config.weights, {"weights": str(config.weights), "sha256": info.sha256}


def write_archive(out_dir: Path, work_dir: Path) -> Path:
    """Pack the work folder into ``<out>/anysr-gpu-bench.tar.gz``, replacing the previous archive atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ARCHIVE
    partial = out_dir / f".{ARCHIVE}.partial"
    with tarfile.open(partial, "w:gz") as archive:
        archive.add(work_dir, arcname="anysr-gpu-bench")
    partial.replace(target)
    return target


def run_sections(run: GpuRun, names: tuple[str, ...], out_dir: Path, command: str) -> dict[str, Any]:
    """Run ``names`` in order within the budget; after each, save results.json + report.md and re-pack."""
    from benchmarks.gpu_report import render

    functions = section_functions()
    results: dict[str, Any] = {
        "command": command,
        "config": json.loads(json.dumps(dataclasses.asdict(run.config), default=str)),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sections": {},
    }
    for name in names:
        remaining = run.remaining_s()
        estimate = 0 if run.config.smoke else ESTIMATE_S[name]
        if remaining < estimate:
            results["sections"][name] = {"skipped": f"{remaining:.0f} s of budget left, needs ~{estimate} s"}
        else:
            print(f"== {name} ({remaining:.0f} s of budget left)", flush=True)
            started = time.monotonic()
            try:
                outcome = {"result": functions[name](run)}
            except Exception as error:  # record it and go on: the other sections still count
                outcome = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
                print(f"   {name} failed: {outcome['error']}", flush=True)
            outcome["seconds"] = time.monotonic() - started
            results["sections"][name] = outcome
        results["elapsed_s"] = time.monotonic() - run.started
        run.write_file("results.json", json.dumps(results, indent=1, default=str))
        run.write_file("report.md", render(results))
        write_archive(out_dir, run.work_dir)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--out", type=Path, required=True, help=f"folder for the one archive ({ARCHIVE})")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model and sizes on the CPU: plumbing only")
    parser.add_argument("--device", default=None, help="cuda or cuda:N (cpu with --cpu-smoke)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="weights file (%(default)s)")
    parser.add_argument("--budget-s", type=float, default=None, help="skip sections past this (450; smoke: none)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, in any order")
    parser.add_argument("--keep-work", type=Path, default=None, help="also keep the unpacked work folder here")
    return parser


def make_config(args: argparse.Namespace) -> GpuConfig:
    config = GpuConfig(weights=args.weights)
    if args.cpu_smoke:
        config = dataclasses.replace(config, **SMOKE, budget_s=float("inf"))
    if args.device is not None:
        config = dataclasses.replace(config, device=args.device)
    if args.budget_s is not None:
        config = dataclasses.replace(config, budget_s=args.budget_s)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    names = tuple(dict.fromkeys(name.strip() for name in args.sections.split(",") if name.strip()))
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        print(
            f"benchmarks.gpu: --sections must be a subset of {','.join(SECTIONS)}, got {args.sections!r}",
            file=sys.stderr,
        )
        return 2
    config = make_config(args)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device here; use --cpu-smoke to test the plumbing on a CPU", file=sys.stderr)
        return 2
    if not config.smoke and not config.weights.is_file():
        print(f"benchmarks.gpu: weights file {config.weights} not found", file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="anysr-gpu-bench-"))
    try:
        if config.smoke:
            # One thread: tiny tensors gain nothing from more, and on a busy host the hand-off costs more
            # than the work. Synthetic 48² images: the smoke run checks the plumbing, not the weights.
            torch.set_num_threads(1)
            data = smoke_data(work_dir)
        else:
            data = shared_dir()
            if not (data / "datasets" / "Set5").is_dir():
                print(f"benchmarks.gpu: no Set5 under {data} (set ANYSR_SHARED_DIR); psnr will fail", file=sys.stderr)
        model, weights_path, facts = load_model(config, work_dir)
        run = GpuRun(config, device, model, weights_path, facts, work_dir, data)
        command = shlex.join(["python", "-m", "benchmarks.gpu", *argv])
        results = run_sections(run, names, args.out, command)
        print((work_dir / "report.md").read_text(), flush=True)
        print(f"wrote {args.out / ARCHIVE} in {results['elapsed_s']:.0f} s", flush=True)
        if args.keep_work is not None:
            shutil.copytree(work_dir, args.keep_work, dirs_exist_ok=True)
        failed = [name for name, outcome in results["sections"].items() if "error" in outcome]
        return 1 if failed else 0
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
