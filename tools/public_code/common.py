"""What every check shares: our model at full width with neutral ASE, weight mapping, and the result record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from models.anysr import AnySR, build_model
from models.ase import AnyScaleEnhancement
from models.coords import make_cell, make_coord
from models.spec import ModelSpec


@dataclass(frozen=True)
class CheckResult:
    """One part against its public implementation."""

    part: str
    #: ``owner/name`` of the public repository and the file(s) whose code ran.
    repository: str
    files: tuple[str, ...]
    #: What was compared (shapes, scale, what of ours ran).
    case: str
    max_abs_diff: float
    #: Largest magnitude of the compared outputs, so the difference can be read relative to it.
    output_scale: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "repository": self.repository,
            "files": list(self.files),
            "case": self.case,
            "max_abs_diff": self.max_abs_diff,
            "output_scale": self.output_scale,
            "notes": list(self.notes),
        }


def neutral_model(spec: ModelSpec, seed: int = 0) -> AnySR:
    """Our model in eval mode with seeded random weights and every ASE gate exactly 1 (W2 = 0, as built).

    Biases get random values too (PyTorch leaves them small), so a bias dropped or misplaced would show.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("bias") and ".ase." not in name:
                    param.uniform_(-0.1, 0.1)
        for module in model.modules():
            if isinstance(module, AnyScaleEnhancement):
                assert not module.fc2.weight.any() and not module.fc2.bias.any(), "ASE must start at identity"
    return model.eval()


def map_state(ours: Mapping[str, torch.Tensor], rename: Callable[[str], str | None]) -> dict[str, torch.Tensor]:
    """Our state dict under the public code's names: ``rename`` gives the public name, or None to skip (ASE)."""
    mapped = {}
    for name, tensor in ours.items():
        public = rename(name)
        if public is not None:
            mapped[public] = tensor.detach().clone()
    return mapped


def max_abs_diff(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(max |ours - theirs|, max |theirs|); shapes must agree."""
    if ours.shape != theirs.shape:
        raise AssertionError(f"shapes differ: ours {tuple(ours.shape)}, theirs {tuple(theirs.shape)}")
    return float((ours - theirs).abs().max()), float(theirs.abs().max())


def query_inputs(lr_size: tuple[int, int], out_size: tuple[int, int], seed: int = 1) -> dict[str, torch.Tensor]:
    """The inputs of a point-query decoder check (LIIF, Meta-SR), named as the public snippets read them.

    A random LR image, 500 random queries with random cells (both sides must agree off the grid, not only
    on it), and the whole ``out_size`` grid with its cells, so one run checks both query paths.
    """
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(1, 3, *lr_size, generator=generator)
    points = torch.rand(1, 500, 2, generator=generator) * 2 - 1
    point_cells = torch.rand(1, 500, 2, generator=generator) * 0.2 + 0.01
    grid = make_coord(*out_size)[None]
    grid_cells = make_cell(*out_size, grid.shape[1])[None]
    return {"lr": lr, "points_coord": points, "points_cell": point_cells, "grid_coord": grid, "grid_cell": grid_cells}
