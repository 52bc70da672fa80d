"""Dependency direction: the scheduler and admission import nothing but the standard library and the width set;
the server imports no part module; the core server never imports Ray (only anysr_ray/ does)."""

from __future__ import annotations

import ast
import subprocess
import sys
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


#: Modules that implement parts (or a part's private machinery). The server reaches the model only
#: through models.anysr (the composed model and its inference API), the FLOPs model, checkpoints and
#: the torch-free helpers, so a new part never needs a server change.
PART_MODULES = ("models.encoders", "models.decoders", "models.slicing", "models.ase", "models.parts")
#: Identifiers that would mean the server does a part's arithmetic itself (names in code, not in text:
#: a docstring or the default weights file name may mention a part).
ARCHITECTURE_WORDS = (
    "n_blocks",
    "n_feats",
    "decoder_hidden",
    "hidden_sizes",
    "liif",
    "edsr",
    "rdn",
    "srno",
    "metasr",
    "arbsr",
    "griddecoder",
)


def identifiers(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name)
    return names


def test_server_imports_no_part_module_and_names_no_architecture():
    for path in sorted((REPO / "server").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            for module in modules:
                assert not module.startswith(PART_MODULES), f"{path.relative_to(REPO)} imports {module}"
        for name in identifiers(tree):
            for word in ARCHITECTURE_WORDS:
                assert word not in name.lower(), f"{path.relative_to(REPO)} uses {name!r}: ask the model instead"


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
