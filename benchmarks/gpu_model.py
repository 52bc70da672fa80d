"""The GPU benchmark's in-process sections: the card, its peak, model throughput, batching, bf16 PSNR, a profile.

Each section is a function of a :class:`~benchmarks.gpu.GpuRun` returning a JSON-able dict; files it
makes (profile tables and traces) go into the run's work folder, which the archive holds. Everything
here also runs on a CPU with a tiny model (``--cpu-smoke``), so the plumbing is tested before GPU time
is spent on it.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.bf16_psnr import compare, evaluate_both, shared_datasets
from benchmarks.config import SuiteConfig
from benchmarks.host import cpu_flags as read_cpu_flags
from benchmarks.host import cpu_model, git_commit, matrix_flags
from benchmarks.peak import measure_peak, peak_gflops
from models.flops import count_flops
from models.geometry import output_size
from models.precision import DTYPES

if TYPE_CHECKING:
    from benchmarks.gpu import GpuRun


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nvml_facts() -> dict[str, Any]:
    """Driver and card as NVML reports them; ``{"available": False, "reason": ...}`` without a readable GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as error:  # no library, no driver: a CPU host
        return {"available": False, "reason": f"{type(error).__name__}: {error}"}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)

        def text(value: Any) -> str:
            return value.decode() if isinstance(value, bytes) else str(value)

        facts: dict[str, Any] = {
            "available": True,
            "driver": text(pynvml.nvmlSystemGetDriverVersion()),
            "name": text(pynvml.nvmlDeviceGetName(handle)),
            "memory_total_bytes": int(memory.total),
            "memory_free_bytes": int(memory.free),
        }
        for key, call in (
            ("cuda_driver_version", lambda: pynvml.nvmlSystemGetCudaDriverVersion()),
            ("power_limit_w", lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000),
            ("max_sm_clock_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        ):
            try:
                facts[key] = call()
            except Exception as error:
                facts[key] = f"unreadable ({type(error).__name__})"
        return facts
    finally:
        pynvml.nvmlShutdown()


def section_environment(run: GpuRun) -> dict[str, Any]:
    """The card, the driver, the torch build, the host CPU, and the TF32 switches fp32 runs under."""
    device = run.device
    card = None
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        card = {
            "name": properties.name,
            "memory_bytes": properties.total_memory,
            "multiprocessors": properties.multi_processor_count,
            "capability": f"{properties.major}.{properties.minor}",
        }
    build = torch.__config__.show()
    run.write_file("environment/torch-config.txt", build)
    smi = _command_text(["nvidia-smi"])
    if smi is not None:
        run.write_file("environment/nvidia-smi.txt", smi)
    flags = read_cpu_flags()
    return {
        "device": str(device),
        "card": card,
        "nvml": nvml_facts(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_matrix_flags": matrix_flags(flags),
        "cpu_flags": flags,
        "torch_threads": torch.get_num_threads(),
        "model": run.model_facts,
        **git_commit(),
    }


def _command_text(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout + done.stderr


def section_peak(run: GpuRun) -> dict[str, Any]:
    """fp32 and bf16 matrix-product peak of the device (the yardstick for every GFLOP/s below)."""
    config = run.config
    peak = measure_peak(run.device, config.peak_sizes, config.peak_min_seconds)
    run.peak = peak
    return peak


def _time_upscale(run: GpuRun, lr: torch.Tensor, out: tuple[int, int], width: float, dtype: str, block: int) -> float:
    synchronise(run.device)
    started = time.perf_counter()
    run.model.upscale(lr, out, width, compute_dtype=DTYPES[dtype], block_queries=block)
    synchronise(run.device)
    return time.perf_counter() - started


def section_throughput(run: GpuRun) -> dict[str, Any]:
    """Output megapixels per second of ``AnySR.upscale`` per scale, width and precision; time vs FLOPs ratio.

    Rounds are interleaved over the widths of one (scale, precision) after one untimed call each;
    medians. Then, at ×2 full width bf16, the decoder's block size (queries decoded at once) is swept,
    since small blocks mean many small kernels on a GPU.
    """
    config, model = run.config, run.model
    side = config.throughput_lr
    lr = run.lr_image(side)
    rows = []
    for dtype in config.throughput_dtypes:
        for scale in config.throughput_scales:
            out = output_size((side, side), (scale, scale))
            for width in model.widths:
                _time_upscale(run, lr, out, width, dtype, config.block_queries)
            times: dict[float, list[float]] = {width: [] for width in model.widths}
            for _ in range(config.repeats):
                for width in model.widths:
                    times[width].append(_time_upscale(run, lr, out, width, dtype, config.block_queries))
            full = statistics.median(times[1.0])
            full_flops = count_flops(model, (side, side), out, 1.0).total
            for width in model.widths:
                median = statistics.median(times[width])
                flops = count_flops(model, (side, side), out, width).total
                rows.append(
                    {
                        "precision": dtype,
                        "scale": scale,
                        "width": width,
                        "lr_size": [side, side],
                        "out_size": list(out),
                        "time_s": median,
                        "runs": times[width],
                        "output_mpx_per_s": out[0] * out[1] / median / 1e6,
                        "flops": flops,
                        "gflops_per_s": flops / median / 1e9,
                        "share_of_peak": _share(run, flops / median / 1e9, dtype),
                        "time_ratio": median / full,
                        "flops_ratio": flops / full_flops,
                    }
                )
    sweep = []
    out = output_size((side, side), (2.0, 2.0))
    flops = count_flops(model, (side, side), out, 1.0).total
    for block in config.block_sweep:
        _time_upscale(run, lr, out, 1.0, "bf16", block)
        times = [_time_upscale(run, lr, out, 1.0, "bf16", block) for _ in range(config.repeats)]
        median = statistics.median(times)
        sweep.append(
            {
                "block_queries": block,
                "time_s": median,
                "output_mpx_per_s": out[0] * out[1] / median / 1e6,
                "gflops_per_s": flops / median / 1e9,
            }
        )
    return {"block_queries": config.block_queries, "rows": rows, "block_sweep": sweep}


def _share(run: GpuRun, gflops: float, precision: str) -> float | None:
    peak = peak_gflops(run.peak, precision)
    return gflops / peak if peak else None


def section_batching(run: GpuRun) -> dict[str, Any]:
    """The runner's throughput per batch size for each tile size (``benchmarks.batching``, auto precision)."""
    from benchmarks.batching import run_batching

    config = run.config
    results = {}
    for tile in config.batch_tiles:
        suite = SuiteConfig(
            device=str(run.device),
            dtype="auto",
            model_spec=config.model_spec,
            batch_tile=tile,
            batch_sizes=config.batch_sizes,
            repeats=config.repeats,
        )
        with torch.inference_mode():
            settings, outcome = run_batching(suite)
        for row in outcome["rows"]:
            row["share_of_peak"] = _share(run, row["gflops_per_s"], settings["precision"])
        results[str(tile)] = {"settings": settings, **outcome}
    return results


def section_psnr(run: GpuRun) -> dict[str, Any]:
    """bf16 against fp32 PSNR on Set5 and Set14 (:mod:`benchmarks.bf16_psnr`), scored on the device."""
    config = run.config
    datasets = shared_datasets(run.shared_dir, max_images=config.psnr_max_images)
    started = time.perf_counter()
    scores = evaluate_both(run.model, datasets, config.psnr_scales)
    results = compare(scores["fp32"], scores["bf16"])
    run.write_file("psnr/per_image.json", json.dumps(scores, indent=1))
    return {
        **results,
        "datasets": {name: [path.name for path in paths] for name, paths in datasets.items()},
        "scales": list(config.psnr_scales),
        "seconds": time.perf_counter() - started,
        "tf32": "off for the fp32 pass",
    }


def section_profile(run: GpuRun) -> dict[str, Any]:
    """torch.profiler over one full-width bf16 upscale and over runner batches of small tiles.

    For each: wall time, the device's kernel time (busy share of the wall time), kernel launches and
    the mean kernel length. A low busy share means the host side or launch overhead bounds the run; a
    high one with a low share of peak means the kernels themselves (memory bandwidth, small shapes).
    """
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.batching import tile_jobs
    from server.runner import ModelRunner, RunnerConfig
    from server.tiling import plan_for_model

    config, model, device = run.config, run.model, run.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    side = config.throughput_lr
    lr = run.lr_image(side)
    out = output_size((side, side), (2.0, 2.0))

    def upscale() -> None:
        model.upscale(lr, out, 1.0, compute_dtype=torch.bfloat16, block_queries=config.block_queries)

    runner = ModelRunner(model, RunnerConfig(device=str(device), precision="auto"))
    tile = min(config.batch_tiles)
    window = 3 * tile
    image = run.lr_image(window)[0].cpu()
    plan = plan_for_model(model, (window, window), output_size((window, window), (2.0, 2.0)), tile)
    jobs = tile_jobs(plan, image, model, max(config.batch_sizes))
    cases = {
        f"upscale_{side}_x2_bf16": (upscale, count_flops(model, (side, side), out, 1.0).total),
        f"run_batch_{tile}px_x1": (lambda: runner.run_batch(jobs[:1]), jobs[0].flops),
        f"run_batch_{tile}px_x{len(jobs)}": (lambda: runner.run_batch(jobs), jobs[0].flops * len(jobs)),
    }
    results = {}
    for name, (call, flops) in cases.items():
        call()  # warm: kernel selection and allocations
        synchronise(device)
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            call()
            synchronise(device)
            wall = time.perf_counter() - started
        results[name] = summarise_profile(prof, wall, flops, device)
        sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        run.write_file(f"profile/{name}.txt", prof.key_averages().table(sort_by=sort, row_limit=25))
        if device.type == "cuda":
            trace = run.work_dir / "profile" / f"{name}.trace.json"
            prof.export_chrome_trace(str(trace))
    results["runner_precision"] = runner.precision
    return results


def summarise_profile(prof: Any, wall_s: float, flops: int, device: torch.device) -> dict[str, Any]:
    """Wall time, device kernel time and launches of one profiled call."""
    kernel_us, launches = 0.0, 0
    if device.type == "cuda":
        for event in prof.key_averages():
            if str(getattr(event, "device_type", "")).endswith("CUDA"):
                kernel_us += float(event.self_device_time_total)
                launches += int(event.count)
    kernel_s = kernel_us / 1e6
    return {
        "wall_s": wall_s,
        "gflops_per_s": flops / wall_s / 1e9,
        "device_kernel_s": kernel_s if device.type == "cuda" else None,
        "device_busy_share": kernel_s / wall_s if device.type == "cuda" else None,
        "kernel_launches": launches if device.type == "cuda" else None,
        "mean_kernel_us": kernel_us / launches if launches else None,
    }
