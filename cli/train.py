"""``anysr train``: run or resume a training stage from a YAML config."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

HELP = "train or resume (stage 1: LIIF base; stage 2: AnySR Algorithm 1) from a YAML config"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML file of TrainConfig fields")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (YAML value), e.g. --set steps=20000; dotted keys reach into the model "
        "spec, e.g. --set model.encoder.args.interweave=false",
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

    from models.training.train import TrainConfig, train

    data = yaml.safe_load(args.config.read_text()) or {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        set_dotted(data, key, yaml.safe_load(value))
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


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``key`` = ``a.b.c``, creating the objects on the way (the model spec's
    defaults apply to whatever a config leaves out, so a partial spec is a valid spec)."""
    *path, last = key.split(".")
    target = data
    for name in path:
        child = target.get(name)
        if child is None:
            child = target[name] = {}
        if not isinstance(child, dict):
            raise SystemExit(f"--set {key}: {name!r} is not an object in the config")
        target = child
    target[last] = value
