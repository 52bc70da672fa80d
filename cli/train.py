"""``anysr train``: run or resume a training stage from a YAML config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "train or resume (stage 1: LIIF base; stage 2: AnySR Algorithm 1) from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML file of TrainConfig fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (YAML value), e.g. --set steps=20000",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many steps in this call (the lr schedule still uses `steps`)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import yaml

    from models.train import TrainConfig, train

    data = yaml.safe_load(args.config.read_text()) or {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        data[key] = yaml.safe_load(value)
    config = TrainConfig.from_dict(data)
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(config.run_dir) / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("anysr")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    meta = train(config, max_steps=args.max_steps, quiet=args.quiet)
    print(f"stopped at step {meta['step']} of {meta.get('steps', config.steps)}; state in {config.run_dir}")
    return 0
