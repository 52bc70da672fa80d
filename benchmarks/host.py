"""What machine and code a benchmark ran on, and the per-part JSON record around its results.

Every part's JSON carries the same ``host`` block (CPU model, its flags, cores, torch, threads, the
accelerator, load average before and after, the git commit), because a timing means nothing without the
machine it came from and how busy that machine was: the same code runs 10x apart on CPUs with and
without native bf16 (``avx512_bf16``, ``amx_bf16``). Reading and writing the records lives here too, so the
suite and the report agree on the file layout: ``<out>/<part>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
#: Bumped when a part's JSON layout changes incompatibly, so the report can refuse stale files.
RECORD_VERSION = 1


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """Every flag of the first CPU in /proc/cpuinfo (Linux), sorted; [] where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return sorted(value.split())
    return []


#: The flags that decide matrix-product speed, shown in reports (the record keeps them all).
MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def matrix_flags(flags: list[str]) -> list[str]:
    """The :data:`MATRIX_FLAGS` among ``flags``, in that order."""
    present = set(flags)
    return [flag for flag in MATRIX_FLAGS if flag in present]


def git_commit() -> dict[str, Any]:
    """HEAD's hash and whether the working tree had uncommitted changes (None where git is unavailable)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def accelerator(device: str) -> dict[str, Any] | None:
    """Name and memory of the CUDA device a part ran on; None on CPU."""
    target = torch.device(device)
    if target.type != "cuda" or not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(target)
    return {
        "name": properties.name,
        "memory_bytes": properties.total_memory,
        "cuda": torch.version.cuda,
    }


def host_info(device: str, threads: int | None) -> dict[str, Any]:
    """The static facts of this host; the load averages are added by :func:`make_record`."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
        "device": device,
        "accelerator": accelerator(device),
        **git_commit(),
    }


def make_record(
    part: str,
    command: str,
    config: dict[str, Any],
    results: dict[str, Any],
    host: dict[str, Any],
    load_before: tuple[float, float, float],
    started_s: float,
) -> dict[str, Any]:
    """One part's JSON: what ran (command, config), where (host, load), when, and its results."""
    return {
        "part": part,
        "record_version": RECORD_VERSION,
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - started_s,
        "config": config,
        "host": {**host, "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())},
        "results": results,
    }


def part_path(out_dir: Path, part: str) -> Path:
    return out_dir / f"{part}.json"


def write_record(out_dir: Path, record: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = part_path(out_dir, record["part"])
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_records(out_dir: Path, parts: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The saved record of each of ``parts`` that exists in ``out_dir``, in ``parts`` order.

    A file from an incompatible layout raises ValueError naming it, rather than rendering wrong tables.
    """
    records = {}
    for part in parts:
        path = part_path(out_dir, part)
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record.get("record_version") != RECORD_VERSION or record.get("part") != part:
            raise ValueError(
                f"{path} is not a version-{RECORD_VERSION} record of part {part!r} "
                f"(got version {record.get('record_version')!r}, part {record.get('part')!r}); rerun that part"
            )
        records[part] = record
    return records
