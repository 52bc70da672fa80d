"""``loadtest`` speaks HTTP only: importing every module of it loads neither ``models``, ``server`` nor torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import loadtest

REPO = Path(__file__).resolve().parents[2]


def test_loadtest_never_imports_models_server_or_torch() -> None:
    modules = [f"loadtest.{info.name}" for info in pkgutil.iter_modules(loadtest.__path__) if info.name != "__main__"]
    assert "loadtest.client" in modules and "loadtest.command" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import cli.loadtest\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('models', 'server', 'torch'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"loadtest imported {done.stdout.strip()} {done.stderr[-2000:]}"
