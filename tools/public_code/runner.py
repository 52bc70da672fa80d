"""Run a snippet of code against a checkout of a public repository, in a subprocess, on the CPU.

The public code imports its own ``models``/``utils`` packages, which would clash with ours, so it runs in a
fresh interpreter whose path holds the checkout and not this repository. Tensors go in and out through
safetensors files. The prelude makes research code written for a GPU run on a CPU-only machine without
editing it: ``Tensor.cuda()`` and ``Module.cuda()`` return their argument unchanged, and logging-only
imports that are not installed here (``tensorboardX``) are stubbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

#: Runs before every snippet. ``inputs`` holds the tensors passed in; the snippet fills ``outputs``.
PRELUDE = """
import sys, types
import torch
from safetensors.torch import load_file, save_file

torch.Tensor.cuda = lambda self, *args, **kwargs: self
torch.nn.Module.cuda = lambda self, *args, **kwargs: self
for _name in ("tensorboardX",):
    if _name not in sys.modules:
        _stub = types.ModuleType(_name)
        _stub.SummaryWriter = object
        sys.modules[_name] = _stub
torch.set_num_threads(1)
inputs = load_file(sys.argv[1])
outputs = {}
"""

EPILOGUE = """
save_file({key: value.detach().contiguous() for key, value in outputs.items()}, sys.argv[2])
"""


class PublicCodeError(RuntimeError):
    """The public code failed; the message carries its stderr."""


def run_public(
    repo: Path, snippet: str, inputs: dict[str, torch.Tensor], timeout_s: float = 600
) -> dict[str, torch.Tensor]:
    """Run ``snippet`` with ``repo`` as the working directory and first path entry; return its ``outputs``."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise FileNotFoundError(f"no checkout of the public repository at {repo}")
    with tempfile.TemporaryDirectory() as folder:
        inputs_path, outputs_path = Path(folder) / "in.safetensors", Path(folder) / "out.safetensors"
        save_file({key: value.detach().contiguous() for key, value in inputs.items()}, str(inputs_path))
        code = PRELUDE + textwrap.dedent(snippet) + EPILOGUE
        # Only the checkout (and the interpreter's own site-packages) on the path: not this repository.
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env["PYTHONPATH"] = str(repo)
        done = subprocess.run(
            [sys.executable, "-c", code, str(inputs_path), str(outputs_path)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise PublicCodeError(f"public code in {repo} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return load_file(str(outputs_path))


def repository_commit(repo: Path) -> str | None:
    """The commit a checkout came from, if it is a git checkout (``git archive`` exports carry none)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
