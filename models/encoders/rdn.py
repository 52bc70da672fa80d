"""RDN (Zhang et al., CVPR 2018) rebuilt the AnySR way: every dense layer grows by a width prefix, with ASE.

The backbone of the paper's second half, as LIIF uses it (no upsampler, no mean shift; inputs normalised to
[-1, 1]): two shallow convolutions, D residual dense blocks, global feature fusion (1×1 over all blocks'
outputs, then 3×3) and a global residual to the first shallow features. A dense block runs C 3×3 layers,
layer c reading the block input and every earlier layer's output, then fuses them back to G0 channels
with a 1×1 convolution (local feature fusion) plus a local residual.

Width w slices each dense layer's growth: layer c keeps its first k = floor(G · w) filters. Its input is
then the block input (G0 channels, never sliced) and the first k channels of each earlier layer, so it
reads the matching columns of its weight: G0 leading columns and, for each earlier layer j, the k columns
starting at G0 + j·G. A narrow subnet is therefore a prefix of every layer's filters, and the columns it
reads are a union of per-layer prefixes (:meth:`RDNEncoder.used_regions` declares them box by box).
Features between blocks stay G0 wide at every width, so any decoder plugs in unchanged.

ASE gates each block's last dense layer output (its k channels) before the fusion, with a scale pair
after every 8 channels: λ = 64 / 8 = 8 insertions at full width, the paper's λ for RDN. (The AnySR code
gates the last two layers' outputs, 2G channels with a pair every 16, but its slicing shifts channels
between widths; see docs/models.md.) The default widths are the AnySR code's for RDN: 0.7/0.8/0.9/1.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.ase import AnyScaleEnhancement
from models.parts import Box, Encoder, Regions, StageHook, prefixed
from models.registry import PartConfig, register_encoder
from models.slicing import prefix_box
from models.widths import channels_at, validate_widths

#: The AnySR code's RDN widths (its EDSR uses the paper's 0.5/0.7/0.9/1.0).
RDN_WIDTHS: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class RDNConfig(PartConfig):
    """RDN configuration "B" (16 blocks of 8 layers, growth 64, 64 channels) with ASE (λ = 8)."""

    #: Channels between blocks (G0). Never sliced.
    g0: int = 64
    #: Channels each dense layer adds at full width (G); the width slices it.
    growth: int = 64
    #: Residual dense blocks (D).
    n_blocks: int = 16
    #: Dense layers per block (C).
    n_layers: int = 8
    #: Any-scale enhancement on each block's last dense layer; False is the "w/o ASE" ablation.
    ase: bool = True
    #: Feature interweaving; False appends (s_h, s_w) once ("w/o FI").
    interweave: bool = True
    #: Channels per interweaving chunk: 64 / 8 = λ = 8 scale pairs at full width.
    ase_chunk: int = 8
    #: Hidden size of the ASE MLP (2 · G).
    ase_hidden: int = 128
    widths: tuple[float, ...] = RDN_WIDTHS

    def __post_init__(self) -> None:
        if min(self.g0, self.growth) < 2 or min(self.n_blocks, self.n_layers) < 1:
            raise ValueError(
                f"g0 and growth must be >= 2, n_blocks and n_layers >= 1; got g0={self.g0}, growth={self.growth}, "
                f"n_blocks={self.n_blocks}, n_layers={self.n_layers}"
            )
        if not 1 <= self.ase_chunk <= self.growth:
            raise ValueError(f"ase_chunk must be between 1 and growth={self.growth}, got {self.ase_chunk}")
        if self.ase_hidden < 1:
            raise ValueError(f"ase_hidden must be >= 1, got {self.ase_hidden}")
        object.__setattr__(self, "widths", validate_widths(self.widths))


def dense_columns(g0: int, growth: int, layers: int, channels: int) -> list[slice]:
    """Input columns a layer reads after ``layers`` earlier dense layers that each kept ``channels`` of
    ``growth``: the block input, then each earlier layer's first ``channels`` columns (in concat order)."""
    columns = [slice(0, g0)]
    columns += [slice(g0 + index * growth, g0 + index * growth + channels) for index in range(layers)]
    return columns


def _read_columns(weight: torch.Tensor, columns: list[slice], full: bool) -> torch.Tensor:
    """``weight[:, columns]`` as one tensor (a plain slice when every earlier layer ran whole)."""
    if full:
        return weight[:, : columns[-1].stop]
    return torch.cat([weight[:, column] for column in columns], dim=1)


class ResidualDenseBlock(nn.Module):
    """C dense 3×3 layers (growth sliced to a prefix), ASE on the last one, 1×1 fusion, local residual."""

    def __init__(self, config: RDNConfig) -> None:
        super().__init__()
        self.config = config
        g0, growth = config.g0, config.growth
        self.layers = nn.ModuleList(
            nn.Conv2d(g0 + index * growth, growth, 3, padding=1) for index in range(config.n_layers)
        )
        self.fusion = nn.Conv2d(g0 + config.n_layers * growth, g0, 1)
        self.ase = (
            AnyScaleEnhancement(growth, config.ase_hidden, config.ase_chunk, config.interweave) if config.ase else None
        )

    def forward(self, x: torch.Tensor, channels: int, scale: torch.Tensor) -> torch.Tensor:
        config = self.config
        full = channels == config.growth
        features = [x]
        for index, layer in enumerate(self.layers):
            columns = dense_columns(config.g0, config.growth, index, channels)
            weight = _read_columns(layer.weight[:channels], columns, full)
            grown = F.relu(F.conv2d(torch.cat(features, dim=1), weight, layer.bias[:channels], padding=1))
            if index == len(self.layers) - 1 and self.ase is not None:
                grown = self.ase(grown, scale)
            features.append(grown)
        columns = dense_columns(config.g0, config.growth, config.n_layers, channels)
        fused = F.conv2d(torch.cat(features, dim=1), _read_columns(self.fusion.weight, columns, full), self.fusion.bias)
        return fused + x

    def macs_per_pixel(self, channels: int) -> int:
        config = self.config
        layers = sum((config.g0 + index * channels) * channels * 9 for index in range(config.n_layers))
        return layers + (config.g0 + config.n_layers * channels) * config.g0

    def used_regions(self, channels: int) -> Regions:
        config = self.config
        if channels == config.growth:
            return {}
        regions: Regions = {}
        for index in range(config.n_layers):
            boxes: tuple[Box, ...] = tuple(
                (slice(0, channels), column) for column in dense_columns(config.g0, config.growth, index, channels)
            )
            regions[f"layers.{index}.weight"] = boxes
            regions[f"layers.{index}.bias"] = (prefix_box(channels),)
        fusion = dense_columns(config.g0, config.growth, config.n_layers, channels)
        regions["fusion.weight"] = tuple((slice(None), column) for column in fusion)
        if self.ase is not None:
            regions.update(prefixed("ase", self.ase.used_regions(channels)))
        return regions


@register_encoder(
    "rdn",
    config=RDNConfig,
    tiny={"g0": 8, "growth": 8, "n_blocks": 2, "n_layers": 3, "ase_chunk": 4, "ase_hidden": 8},
    summary="RDN (16 dense blocks of 8 layers, growth 64); every dense layer's growth sliced, ASE on the last",
)
class RDNEncoder(Encoder):
    """Shallow features, D residual dense blocks, global feature fusion, global residual."""

    def __init__(self, config: RDNConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.g0
        self.widths = config.widths
        self.n_stages = config.n_blocks
        self.shallow1 = nn.Conv2d(3, config.g0, 3, padding=1)
        self.shallow2 = nn.Conv2d(config.g0, config.g0, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualDenseBlock(config) for _ in range(config.n_blocks))
        self.global_fusion = nn.Conv2d(config.n_blocks * config.g0, config.g0, 1)
        self.global_conv = nn.Conv2d(config.g0, config.g0, 3, padding=1)

    def forward(
        self, lr: torch.Tensor, width: float, scale: torch.Tensor, hook: StageHook | None = None
    ) -> torch.Tensor:
        channels = channels_at(self.config.growth, self.check_width(width))
        shallow = self.shallow1((lr - 0.5) / 0.5)
        x = self.shallow2(shallow)
        outputs = []
        for index, block in enumerate(self.blocks):
            x = block(x, channels, scale)
            if hook is not None:
                x = hook(index, x)
            outputs.append(x)
        return self.global_conv(self.global_fusion(torch.cat(outputs, dim=1))) + shallow

    def macs(self, lr_size: tuple[int, int], width: float) -> int:
        config = self.config
        channels = channels_at(config.growth, width)
        per_pixel = 3 * config.g0 * 9 + config.g0 * config.g0 * 9
        per_pixel += sum(block.macs_per_pixel(channels) for block in self.blocks)
        per_pixel += config.n_blocks * config.g0 * config.g0 + config.g0 * config.g0 * 9
        per_image = sum(block.ase.macs(channels) for block in self.blocks if block.ase is not None)
        return per_pixel * lr_size[0] * lr_size[1] + per_image

    @property
    def receptive_radius(self) -> int:
        # Two shallow 3×3 convolutions, n_layers 3×3 layers per block (the fusions are 1×1), the global 3×3.
        return 2 + self.config.n_blocks * self.config.n_layers + 1

    def used_regions(self, width: float) -> Regions:
        channels = channels_at(self.config.growth, width)
        regions: Regions = {}
        for index, block in enumerate(self.blocks):
            regions.update(prefixed(f"blocks.{index}", block.used_regions(channels)))
        return regions
