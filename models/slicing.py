"""Layers that run at a width prefix: a narrow subnet uses the first k filters of the full weights.

Slicing happens at call time on the shared parameters, so every width trains and runs the same
tensors and gradients only reach the used prefix (Algorithm 1's "update only Θ[1:|Θ_t|]"). The
region helpers describe those prefixes for :meth:`models.parts.Encoder.used_regions`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.parts import Box, Regions


class SlicedConv2d(nn.Conv2d):
    """A k×k convolution whose output and/or input channels can be cut to a prefix."""

    def forward_sliced(self, x: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
        """Convolve ``x`` (its channel count picks the input prefix) into ``out_channels`` filters."""
        out = self.out_channels if out_channels is None else out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding)


class SlicedMLP(nn.Module):
    """A ReLU MLP whose hidden layers can be cut to a width prefix (the slim decoder)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        sizes = (in_features, *hidden, out_features)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


def prefix_box(*sizes: int | None) -> Box:
    """A box of leading prefixes, one per dimension: ``None`` means the whole dimension."""
    return tuple(slice(None) if size is None else slice(0, size) for size in sizes)


def mlp_regions(prefix: str, full_sizes: list[int], sizes: list[int]) -> Regions:
    """Regions of a :class:`SlicedMLP` named ``prefix`` whose hidden layers run at ``sizes`` (of ``full_sizes``).

    Layer i reads rows ``[:sizes[i]]`` (its outputs) and columns ``[:sizes[i-1]]`` (its inputs); the first
    layer reads every input and the last every output. Unsliced layers are left out (read whole).
    """
    regions: Regions = {}
    in_sizes: list[int | None] = [None, *sizes]
    out_sizes: list[int | None] = [*sizes, None]
    full_in: list[int | None] = [None, *full_sizes]
    full_out: list[int | None] = [*full_sizes, None]
    for index, (size_in, size_out) in enumerate(zip(in_sizes, out_sizes)):
        if size_in == full_in[index] and size_out == full_out[index]:
            continue
        regions[f"{prefix}.layers.{index}.weight"] = (prefix_box(size_out, size_in),)
        regions[f"{prefix}.layers.{index}.bias"] = (prefix_box(size_out),)
    return regions
