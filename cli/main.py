"""The ``anysr`` command: one entry point, one module per subcommand.

Each subcommand lives in ``cli/<name>.py`` and exposes ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs, so ``anysr info`` never
pays for importing the server and ``anysr serve`` never imports the trainer.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

#: Subcommand name → module under ``cli``.
SUBCOMMANDS: dict[str, str] = {
    "info": "cli.info",
    "models": "cli.models",
    "flops": "cli.flops",
    "upscale": "cli.upscale",
    "serve": "cli.serve",
    "train": "cli.train",
    "eval": "cli.evaluate",
    "loadtest": "cli.loadtest",
}


def available_subcommands() -> dict[str, str]:
    """Subcommands whose module exists (later issues add modules; a missing one is simply not offered)."""
    found = {}
    for name, module in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = module
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    modules = available_subcommands()
    parser = argparse.ArgumentParser(prog="anysr", description="AnySR: any-scale, any-resource super-resolution.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the rest get a bare entry for --help.
    chosen = args_list[0] if args_list and args_list[0] in modules else None
    for name, module_name in modules.items():
        if name == chosen:
            module = importlib.import_module(module_name)
            sub_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(run=module.run)
        else:
            sub.add_parser(name, help=f"see: anysr {name} --help")
    args = parser.parse_args(args_list)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
