"""Two checkouts of this repository timed against each other: did a code change make upscaling faster?

In-process A/B is impossible when the change is in ``models/`` itself, so each run is a fresh process that
imports ``models`` from one checkout (``--old``: e.g. a ``git worktree`` of the commit before; ``--new``:
this one) and times :meth:`AnySR.upscale` of the same image in bf16 and fp32 at full width, on the
weights of this checkout. Processes alternate old/new ``--pairs`` times, so drift on a shared host falls
on both alike; medians over every round are reported, with the fp32/bf16 ratio of each side.

    git worktree add /tmp/before <commit>
    python -m benchmarks.ab_checkouts --old /tmp/before --pairs 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.config import DEFAULT_WEIGHTS
from benchmarks.host import host_info, make_record, write_record

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PRECISIONS = ("bf16", "fp32")

#: Run in a child with the checkout first on sys.path: times one image per precision, ``rounds`` times.
CHILD = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from models.checkpoint import load_checkpoint
from models.geometry import output_size
sys.path.insert(1, sys.argv[2])
from benchmarks.bench_server_overhead import bench_image
from benchmarks.served_precision import decode_png
torch.set_num_threads(int(sys.argv[4]))
model, _ = load_checkpoint(sys.argv[3])
model = model.eval().to(memory_format=torch.channels_last)
lr = decode_png(bench_image(int(sys.argv[5]))[0])
out = output_size(tuple(lr.shape[-2:]), (2.0, 2.0))
dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
for dtype in dtypes.values():
    model.upscale(lr, out, 1.0, compute_dtype=dtype)
times = {name: [] for name in dtypes}
for _ in range(int(sys.argv[6])):
    for name, dtype in dtypes.items():
        started = time.perf_counter()
        model.upscale(lr, out, 1.0, compute_dtype=dtype)
        times[name].append(time.perf_counter() - started)
print(json.dumps(times))
"""


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    argv = [str(tree), str(REPO), str(args.weights), str(args.threads), str(args.size), str(args.rounds)]
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_checkouts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--new", type=Path, default=REPO, help="(this checkout)")
    parser.add_argument("--pairs", type=int, default=6, help="old/new process pairs (%(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per process (%(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="(%(default)s)")
    parser.add_argument("--size", type=int, default=256, help="LR side; the output is ×2 (%(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="(%(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (%(default)s)")
    args = parser.parse_args(argv)
    started, load = time.monotonic(), os.getloadavg()
    times: dict[str, dict[str, list[float]]] = {side: {p: [] for p in PRECISIONS} for side in ("old", "new")}
    for _ in range(args.pairs):
        for side, tree in (("old", args.old), ("new", args.new)):
            for precision, runs in run_child(tree, args).items():
                times[side][precision] += runs
    results = {}
    print(f"{'checkout':9s} {'bf16 s':>8s} {'fp32 s':>8s} {'fp32/bf16':>10s}")
    for side in ("old", "new"):
        medians = {p: statistics.median(times[side][p]) for p in PRECISIONS}
        results[side] = {
            "median_s": medians,
            "runs_s": times[side],
            "fp32_over_bf16": medians["fp32"] / medians["bf16"],
        }
        print(f"{side:9s} {medians['bf16']:8.3f} {medians['fp32']:8.3f} {results[side]['fp32_over_bf16']:9.2f}x")
    ratio = results["old"]["median_s"]["bf16"] / results["new"]["median_s"]["bf16"]
    print(f"bf16: new is {ratio:.2f}x the speed of old")
    config = {key: str(value) for key, value in vars(args).items()}
    command = "python -m benchmarks.ab_checkouts " + " ".join(argv if argv is not None else sys.argv[1:])
    record = make_record("ab_checkouts", command, config, results, host_info("cpu", args.threads), load, started)
    print(f"wrote {write_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
