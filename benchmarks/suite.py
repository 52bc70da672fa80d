"""The benchmark suite: one command that times every part, saves JSON and writes docs/benchmarks.md.

    python -m benchmarks.suite                       # everything, full size (~18 min on 2 idle CPU cores)
    python -m benchmarks.suite --quick --out /tmp/bench --doc /tmp/bench.md   # tiny sizes: a smoke run
    python -m benchmarks.suite --only widths,reference --threads 2
    python -m benchmarks.suite --report-only          # re-render the page from the saved JSON
    python -m benchmarks.suite --only batching --device cuda --dtype bf16     # on a GPU host
    python -m benchmarks.suite --only bf16_psnr --threads 2   # bf16 vs fp32 PSNR on Set5/Set14 (slow on CPU)

Parts (``--only``): ``widths`` (time per width vs FLOPs ratio), ``reference`` (AnySR.upscale vs plain
LIIF), ``batching`` (the server runner's throughput per batch size), ``overhead`` (server latency minus
model time), ``memory`` (server RSS for a 2048×2048 ×4 request), ``fairness`` (small requests' latency
while large ones run, fair queuing against first-in-first-out), ``precision`` (default serving against
``--precision fp32`` and the model alone) and, only when asked for, ``bf16_psnr`` (bf16 against fp32
PSNR on Set5 and Set14). ``--dtype`` (default ``auto``, as the server) is the batching part's and the
server parts' precision. Each writes ``<out>/<part>.json``
with its config, the host (CPU, its flags, cores, torch, threads, load average before and after, git
commit), the matrix-product peak of the device in fp32 and bf16 (``benchmarks/peak.py``, measured once at
the start of every run, so each part is scaled by a peak from its own run) and its results; the page is
then rendered from every record in ``<out>``, so a part run alone keeps the others.

Run it on a quiet machine: the load average is recorded, and the page flags parts that shared the CPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import config as suite_config
from benchmarks.config import DEFAULT_PARTS, MODEL_SPECS, PARTS, SuiteConfig
from benchmarks.host import host_info, make_record, read_records, write_record
from benchmarks.peak import measure_peak
from benchmarks.report import render

PartRunner = Callable[[SuiteConfig], tuple[dict[str, Any], dict[str, Any]]]


def part_runners() -> dict[str, PartRunner]:
    """Each part's function; imported here so ``--report-only`` loads no server code."""
    from benchmarks.batching import run_batching
    from benchmarks.bf16_psnr import run_bf16_psnr
    from benchmarks.fairness import run_fairness
    from benchmarks.model_parts import run_reference, run_widths
    from benchmarks.served_precision import run_served_precision
    from benchmarks.server_parts import run_memory, run_overhead

    return {
        "widths": run_widths,
        "reference": run_reference,
        "batching": run_batching,
        "overhead": run_overhead,
        "memory": run_memory,
        "fairness": run_fairness,
        "precision": run_served_precision,
        "bf16_psnr": run_bf16_psnr,
    }


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts must be a comma-separated subset of {','.join(PARTS)}, got {text!r}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    defaults = SuiteConfig()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=defaults.out_dir, help="folder for <part>.json (%(default)s)")
    parser.add_argument("--doc", type=Path, default=defaults.doc_path, help="Markdown page to write (%(default)s)")
    parser.add_argument(
        "--only",
        type=parse_parts,
        default=DEFAULT_PARTS,
        help=f"parts to run ({','.join(DEFAULT_PARTS)}; also bf16_psnr)",
    )
    parser.add_argument("--report-only", action="store_true", help="only re-render --doc from the JSON in --out")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the server")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N (%(default)s)")
    parser.add_argument(
        "--dtype",
        choices=suite_config.DTYPES,
        default=defaults.dtype,
        help="precision of the batching part and the overhead/memory servers; auto resolves as the server does; "
        "fp16 needs CUDA (%(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds of the model parts (3; quick: 1)")
    parser.add_argument(
        "--model-spec",
        choices=tuple(MODEL_SPECS),
        default=defaults.model_spec,
        help="architecture of the random-weight model parts; tiny is for tests (%(default)s)",
    )
    parser.add_argument("--lr-size", type=int, default=None, help="LR side for widths and reference (128; quick: 16)")
    parser.add_argument("--batch-tile", type=int, default=None, help="batching tile side (256 on CUDA, 64 on CPU)")
    parser.add_argument("--weights", type=Path, default=defaults.weights, help="server weights (%(default)s)")
    parser.add_argument(
        "--allow-untrained", action="store_true", help="server parts: random weights if the weights file is missing"
    )
    parser.add_argument(
        "--memory-width",
        type=float,
        default=defaults.memory_width,
        help="width forced for the memory request (%(default)s: full width takes over 20 minutes on 2 CPU cores)",
    )
    parser.add_argument("--memory-size", type=int, default=None, help="memory part's input side (2048; quick: 128)")
    parser.add_argument("--precision-rounds", type=int, default=None, help="timed rounds of the precision part (9)")
    return parser


def make_config(args: argparse.Namespace) -> SuiteConfig:
    """Defaults, then the quick sizes, then whatever was given explicitly; checked."""
    config = SuiteConfig(
        out_dir=args.out,
        doc_path=args.doc,
        threads=args.threads,
        device=args.device,
        dtype=args.dtype,
        model_spec=args.model_spec,
        weights=args.weights,
        allow_untrained=args.allow_untrained,
        memory_width=args.memory_width,
    )
    if args.quick:
        config = suite_config.quick(config)
    explicit: dict[str, Any] = {}
    if args.repeats is not None:
        explicit["repeats"] = args.repeats
    if args.lr_size is not None:
        explicit["widths_lr_size"] = explicit["reference_lr_size"] = args.lr_size
    if args.batch_tile is not None:
        explicit["batch_tile"] = args.batch_tile
    if args.memory_size is not None:
        explicit["memory_size"] = args.memory_size
    if args.precision_rounds is not None:
        explicit["precision_rounds"] = args.precision_rounds
    return suite_config.check(dataclasses.replace(config, **explicit))


def write_doc(config: SuiteConfig) -> Path:
    records = read_records(config.out_dir, PARTS)
    config.doc_path.parent.mkdir(parents=True, exist_ok=True)
    config.doc_path.write_text(render(records))
    return config.doc_path


def run_parts(config: SuiteConfig, parts: tuple[str, ...], command: str) -> None:
    """Run ``parts`` in suite order, writing each one's record as soon as it finishes."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    runners = part_runners()
    host = host_info(config.device, config.threads)
    host["matmul_peak"] = measure_peak(config.device, config.peak_sizes, config.peak_min_seconds)
    print(
        "matrix-product peak: "
        + ", ".join(f"{name} {host['matmul_peak'][name]['gflops_per_s']:.0f} GFLOP/s" for name in ("fp32", "bf16")),
        flush=True,
    )
    for part in (part for part in PARTS if part in parts):
        print(f"\n== {part} ==", flush=True)
        load_before = os.getloadavg()
        started = time.monotonic()
        with torch.inference_mode():
            settings, results = runners[part](config)
        record = make_record(part, command, {"quick": config.quick, **settings}, results, host, load_before, started)
        path = write_record(config.out_dir, record)
        print(f"{part}: {record['duration_s']:.0f} s, wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        config = make_config(args)
    except ValueError as error:
        print(f"benchmarks.suite: {error}", file=sys.stderr)
        return 2
    if not args.report_only:
        from benchmarks.bench_server_overhead import ServerError

        try:
            run_parts(config, args.only, shlex.join(["python", "-m", "benchmarks.suite", *argv]))
        except (FileNotFoundError, ServerError) as error:
            # Parts that finished have saved their records; the page is left as it was.
            print(f"benchmarks.suite: {error}", file=sys.stderr)
            return 1
    print(f"wrote {write_doc(config)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
