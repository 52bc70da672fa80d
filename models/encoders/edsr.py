"""EDSR-baseline rebuilt the AnySR way: every block runs at a width prefix, with any-scale enhancement.

Head conv, ``n_blocks`` AnySR blocks, tail conv, global residual (EDSR-baseline without its upsampler, as
LIIF uses it; like LIIF, no mean shift: inputs are normalised to [-1, 1] instead). In each block conv1
keeps its first k = floor(n_feats · w) filters, ASE gates those k channels, and conv2 reads them back into
n_feats, so features between blocks stay n_feats wide at every width. Parameter names are those of the
format-1 files (``head``, ``blocks.i.conv1``, ``blocks.i.ase.fc1``, ``tail``), so shipped weights load as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.ase import AnyScaleEnhancement
from models.kernels import relu_inference
from models.parts import Encoder, Regions, StageHook, prefixed
from models.registry import PartConfig, register_encoder
from models.slicing import SlicedConv2d, prefix_box
from models.widths import WIDTHS, channels_at, validate_widths


@dataclass(frozen=True)
class EDSRConfig(PartConfig):
    """EDSR-baseline (64 channels, 16 blocks) with ASE and feature interweaving (λ = 64 / 16 = 4)."""

    #: Channels between blocks. Never sliced: any decoder plugs in unchanged.
    n_feats: int = 64
    #: Residual blocks in the body.
    n_blocks: int = 16
    #: Any-scale enhancement on conv1's output; False is the paper's "w/o ASE" ablation (and stage 1).
    ase: bool = True
    #: Feature interweaving; False appends (s_h, s_w) once at the end instead ("w/o FI").
    interweave: bool = True
    #: Channels per interweaving chunk: a scale pair follows every complete chunk (64 / 16 = λ = 4).
    ase_chunk: int = 16
    #: Hidden size of the ASE MLP (paper: 2 · C_in = 128).
    ase_hidden: int = 128
    #: The subnet widths (the paper's for EDSR).
    widths: tuple[float, ...] = WIDTHS

    def __post_init__(self) -> None:
        if self.n_feats < 4 or self.n_blocks < 1:
            raise ValueError(f"n_feats must be >= 4 and n_blocks >= 1, got {self.n_feats}, {self.n_blocks}")
        if not 1 <= self.ase_chunk <= self.n_feats:
            raise ValueError(f"ase_chunk must be between 1 and n_feats={self.n_feats}, got {self.ase_chunk}")
        if self.ase_hidden < 1:
            raise ValueError(f"ase_hidden must be >= 1, got {self.ase_hidden}")
        object.__setattr__(self, "widths", validate_widths(self.widths))


class AnySRBlock(nn.Module):
    """conv1 (n → k, first k filters) → ASE → ReLU → conv2 (k → n, first k inputs) → residual add."""

    def __init__(self, config: EDSRConfig) -> None:
        super().__init__()
        self.conv1 = SlicedConv2d(config.n_feats, config.n_feats, 3, padding=1)
        self.conv2 = SlicedConv2d(config.n_feats, config.n_feats, 3, padding=1)
        self.ase = (
            AnyScaleEnhancement(config.n_feats, config.ase_hidden, config.ase_chunk, config.interweave)
            if config.ase
            else None
        )

    def forward(self, x: torch.Tensor, channels: int, scale: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1.forward_sliced(x, channels)
        if self.ase is not None:
            hidden = self.ase(hidden, scale)
        return x + self.conv2.forward_sliced(relu_inference(hidden))


@register_encoder(
    "edsr-baseline",
    config=EDSRConfig,
    tiny={"n_feats": 16, "n_blocks": 2, "ase_chunk": 4, "ase_hidden": 16},
    summary="EDSR-baseline (16 residual blocks, 64 channels); each block's conv1 sliced, with ASE",
)
class EDSRBaselineEncoder(Encoder):
    """Head conv, ``n_blocks`` AnySR blocks, tail conv, global residual."""

    def __init__(self, config: EDSRConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.n_feats
        self.widths = config.widths
        self.n_stages = config.n_blocks
        self.head = nn.Conv2d(3, config.n_feats, 3, padding=1)
        self.blocks = nn.ModuleList(AnySRBlock(config) for _ in range(config.n_blocks))
        self.tail = nn.Conv2d(config.n_feats, config.n_feats, 3, padding=1)

    def forward(
        self, lr: torch.Tensor, width: float, scale: torch.Tensor, hook: StageHook | None = None
    ) -> torch.Tensor:
        channels = channels_at(self.config.n_feats, self.check_width(width))
        x = self.head((lr - 0.5) / 0.5)
        body = x
        for index, block in enumerate(self.blocks):
            body = block(body, channels, scale)
            if hook is not None:
                body = hook(index, body)
        return self.tail(body) + x

    def macs(self, lr_size: tuple[int, int], width: float) -> int:
        config = self.config
        channels = channels_at(config.n_feats, width)
        per_pixel = 3 * config.n_feats * 9 + config.n_blocks * 2 * config.n_feats * channels * 9
        per_pixel += config.n_feats * config.n_feats * 9
        per_image = 0
        for block in self.blocks:
            if block.ase is not None:
                per_image += block.ase.macs(channels)
        return per_pixel * lr_size[0] * lr_size[1] + per_image

    @property
    def receptive_radius(self) -> int:
        # Head, two convolutions per block and tail: 2 + 2 · n_blocks stacked 3×3 convolutions.
        return 2 + 2 * self.config.n_blocks

    def used_regions(self, width: float) -> Regions:
        channels = channels_at(self.config.n_feats, width)
        if channels == self.config.n_feats:
            return {}
        regions: Regions = {}
        for index, block in enumerate(self.blocks):
            regions[f"blocks.{index}.conv1.weight"] = (prefix_box(channels),)
            regions[f"blocks.{index}.conv1.bias"] = (prefix_box(channels),)
            regions[f"blocks.{index}.conv2.weight"] = (prefix_box(None, channels),)
            if block.ase is not None:
                regions.update(prefixed(f"blocks.{index}.ase", block.ase.used_regions(channels)))
        return regions
