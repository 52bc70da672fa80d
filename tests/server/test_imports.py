"""Dependency direction: server/scheduler.py imports nothing but the standard library and the width set;
the core server never imports Ray (only anysr_ray/ does)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Everything server/scheduler.py may import: the standard library pieces it uses and the width set.
SCHEDULER_IMPORTS = {"__future__", "math", "collections.abc", "dataclasses", "typing", "models.widths"}


def test_scheduler_source_imports_only_the_standard_library_and_the_width_set():
    tree = ast.parse((REPO / "server" / "scheduler.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= SCHEDULER_IMPORTS, imported - SCHEDULER_IMPORTS


def test_the_core_server_never_imports_ray():
    code = (
        "import sys, cli.main, cli.serve, server.app, server.settings, loadtest\n"
        "from server.app import create_app\n"
        "create_app()\n"
        "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    for path in (REPO / "server").rglob("*.py"):
        text = path.read_text()
        assert "import ray" not in text and "from ray" not in text, path
