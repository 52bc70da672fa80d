"""``python -m loadtest``: the same command line as ``anysr loadtest``."""

import argparse

from loadtest.command import HELP, add_arguments, run

parser = argparse.ArgumentParser(prog="python -m loadtest", description=HELP)
add_arguments(parser)
raise SystemExit(run(parser.parse_args()))
