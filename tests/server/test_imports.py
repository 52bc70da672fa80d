"""Dependency direction: the scheduler and admission import nothing but the standard library and the width set."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Everything server/scheduler.py may import: the standard library pieces it uses and the width set.
SCHEDULER_IMPORTS = {
    "__future__",
    "math",
    "collections.abc",
    "dataclasses",
    "typing",
    "models.widths",
    "server.admission",
}


@pytest.mark.parametrize("module", ["scheduler.py", "admission.py"])
def test_scheduler_source_imports_only_the_standard_library_and_the_width_set(module):
    tree = ast.parse((REPO / "server" / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= SCHEDULER_IMPORTS, imported - SCHEDULER_IMPORTS
