"""``python -m tools.public_code --repo liif=DIR [--repo srno=DIR ...] [--out FILE]``: run the checks.

DIR is a checkout of the part's public repository, e.g. made from a fetched snapshot with
``git --git-dir SNAPSHOT archive HEAD | tar -x -C DIR``. A part whose repository is not given is skipped
(and listed as such). Prints a table of max abs differences and writes them as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

#: Part → (module, the public repository its check runs).
CHECKS = {
    "liif": ("tools.public_code.liif", "yinboc/liif"),
    "rdn": ("tools.public_code.rdn", "yinboc/liif"),
    "metasr": ("tools.public_code.metasr", "yinboc/liif"),
    "srno": ("tools.public_code.srno", "2y7c3/Super-Resolution-Neural-Operator"),
    "arbsr": ("tools.public_code.arbsr", "The-Learning-And-Vision-Atelier-LAVA/ArbSR"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.public_code", description=__doc__)
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="PART=DIR",
        help=f"checkout to run a part's check against; parts: {', '.join(CHECKS)}",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    repos: dict[str, Path] = {}
    for item in args.repo:
        part, _, folder = item.partition("=")
        if part not in CHECKS or not folder:
            parser.error(f"--repo takes PART=DIR with PART one of {', '.join(CHECKS)}, got {item!r}")
        repos[part] = Path(folder)
    torch.set_num_threads(1)
    results, skipped = [], []
    for part, (module_name, repository) in CHECKS.items():
        if part not in repos:
            skipped.append(f"{part} (no --repo {part}=DIR; its code is in {repository})")
            continue
        started = time.perf_counter()
        result = importlib.import_module(module_name).check(repos[part])
        row = result.as_dict() | {"seconds": round(time.perf_counter() - started, 1)}
        results.append(row)
        print(
            f"{part:<8} max abs diff {result.max_abs_diff:.2e} (outputs up to {result.output_scale:.2f})  {result.case}"
        )
        for note in result.notes:
            print(f"{'':<8} {note}")
    for line in skipped:
        print(f"skipped: {line}")
    if args.out is not None:
        record = {
            "command": "python -m tools.public_code " + " ".join(sys.argv[1:] if argv is None else argv),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "results": results,
            "skipped": skipped,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
