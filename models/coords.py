"""Pixel-centre coordinate grids in LIIF's convention: [-1, 1] along each axis, (y, x) order."""

from __future__ import annotations

import torch


def make_coord(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Centres of an ``height × width`` grid as a ``(height * width, 2)`` tensor of (y, x) in (-1, 1).

    Pixel i of n sits at -1 + (2i + 1) / n, so a grid never touches the border and any two grids of the
    same extent but different sizes overlay exactly (the property arbitrary-scale decoding relies on).
    """
    ys = -1 + (2 * torch.arange(height, device=device, dtype=torch.float32) + 1) / height
    xs = -1 + (2 * torch.arange(width, device=device, dtype=torch.float32) + 1) / width
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


def make_cell(height: int, width: int, count: int, device: torch.device | None = None) -> torch.Tensor:
    """LIIF's cell: the size of one output pixel in [-1, 1] units, repeated ``count`` times, ``(count, 2)``."""
    cell = torch.tensor([2.0 / height, 2.0 / width], device=device)
    return cell.expand(count, 2).contiguous()
