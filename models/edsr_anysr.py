"""EDSR-baseline feature encoder rebuilt as AnySR: blocks run at a width prefix, with any-scale enhancement.

Input is an LR image in [0, 1], (B, 3, h, w); output is (B, n_feats, h, w) features at every width, so
the decoder never needs to know the width the encoder ran at. Mirrors LIIF's EDSR with
``no_upsampling`` (and, like LIIF, no mean shift: inputs are normalised to [-1, 1] instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.sliced_layers import AnyScaleEnhancement, SlicedConv2d, ase_input_size
from models.spec import ModelSpec
from models.widths import channels_at


class AnySRBlock(nn.Module):
    """conv1 (64 → k, first k filters) → ASE → ReLU → conv2 (k → 64, first k inputs) → residual add."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.conv1 = SlicedConv2d(spec.n_feats, spec.n_feats, 3, padding=1)
        self.conv2 = SlicedConv2d(spec.n_feats, spec.n_feats, 3, padding=1)
        self.ase = (
            AnyScaleEnhancement(spec.n_feats, spec.ase_hidden, spec.ase_chunk, spec.interweave) if spec.ase else None
        )

    def forward(self, x: torch.Tensor, channels: int, scale: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1.forward_sliced(x, channels)
        if self.ase is not None:
            hidden = self.ase(hidden, scale)
        return x + self.conv2.forward_sliced(F.relu(hidden))


class EDSRAnySREncoder(nn.Module):
    """Head conv, ``n_blocks`` AnySR blocks, tail conv, global residual (EDSR-baseline without upsampler)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.out_dim = spec.n_feats
        self.head = nn.Conv2d(3, spec.n_feats, 3, padding=1)
        self.blocks = nn.ModuleList(AnySRBlock(spec) for _ in range(spec.n_blocks))
        self.tail = nn.Conv2d(spec.n_feats, spec.n_feats, 3, padding=1)

    def forward(self, lr: torch.Tensor, width: float, scale: torch.Tensor) -> torch.Tensor:
        """Features of ``lr`` (B, 3, h, w) in [0, 1] at ``width``; ``scale`` is (B, 2) = (s_h, s_w)."""
        channels = channels_at(self.spec.n_feats, width)
        x = self.head((lr - 0.5) / 0.5)
        body = x
        for block in self.blocks:
            body = block(body, channels, scale)
        return self.tail(body) + x


def encoder_macs_per_lr_pixel(spec: ModelSpec, width: float) -> int:
    """Multiply-accumulates per LR pixel of the convolutions the encoder runs at ``width``."""
    channels = channels_at(spec.n_feats, width)
    head = 3 * spec.n_feats * 9
    block = 2 * spec.n_feats * channels * 9
    tail = spec.n_feats * spec.n_feats * 9
    return head + spec.n_blocks * block + tail


def encoder_macs_per_image(spec: ModelSpec, width: float) -> int:
    """MACs that do not grow with pixels: the ASE MLPs, run once per image and block."""
    if not spec.ase:
        return 0
    channels = channels_at(spec.n_feats, width)
    inputs = ase_input_size(channels, spec.ase_chunk, spec.interweave)
    return spec.n_blocks * (inputs * spec.ase_hidden + spec.ase_hidden * channels)
