"""Any-scale enhancement (ASE) with feature interweaving: the paper's way of telling a block the scale.

ASE gates the k channels a sliced sub-block produced by an MLP of their pooled values interwoven with
the scale pair. Shared by every backbone (EDSR-baseline gates each block's conv1 output, RDN each dense
block's last layer), so the ablations (``ase: false``, ``interweave: false``) mean the same thing on each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.kernels import spatial_mean
from models.parts import Regions
from models.slicing import prefix_box


def interweave_layout(channels: int, chunk: int) -> list[int]:
    """Positions of the pooled channels in the interwoven ASE vector; scale pairs fill the gaps.

    After each *complete* chunk of ``chunk`` channels a (s_h, s_w) pair is inserted, so the vector of a
    narrow subnet is a prefix of the full one and the scale always meets the same W1 columns.
    """
    return [c + 2 * (c // chunk) for c in range(channels)]


def ase_input_size(channels: int, chunk: int, interweave: bool) -> int:
    """Length of the ASE MLP's input for ``channels`` pooled channels."""
    if interweave:
        return channels + 2 * (channels // chunk)
    return channels + 2


class AnyScaleEnhancement(nn.Module):
    """ASE: gate a sub-block's k channels by an MLP of (pooled features, scale pairs).

    Gate = 2·sigmoid(W2[:k] · ReLU(W1[:, :len] · v)). The factor 2 and W2 = 0 at initialisation make
    the gate exactly 1 at step 0, so a model rebuilt from non-ASE (stage-1) weights computes the same
    function as before; the paper's plain sigmoid would halve every block's features (gate 0.5).
    """

    def __init__(self, channels: int, hidden: int, chunk: int, interweave: bool) -> None:
        super().__init__()
        self.channels = channels
        self.chunk = chunk
        self.interweave = interweave
        self.fc1 = nn.Linear(ase_input_size(channels, chunk, interweave), hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def build_vector(self, pooled: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Interleave ``pooled`` (B, k) with ``scale`` (B, 2) per the layout; (B, len)."""
        channels = pooled.shape[1]
        if not self.interweave:
            return torch.cat([pooled, scale.to(pooled.dtype)], dim=1)
        pieces = []
        for start in range(0, channels, self.chunk):
            stop = min(start + self.chunk, channels)
            pieces.append(pooled[:, start:stop])
            if stop - start == self.chunk:
                pieces.append(scale.to(pooled.dtype))
        return torch.cat(pieces, dim=1)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Gate ``features`` (B, k, h, w) given per-sample ``scale`` (B, 2) = (s_h, s_w).

        The gate's MLP runs in float32 with autocast off, whatever the features' dtype: it is a few
        thousand multiply-adds per image, and under CPU autocast its two tiny bf16 products are slower
        than in float32 and less exact (``python -m benchmarks.bench_kernels``: the whole gate 2.95 →
        2.12 ms on a 64 × 256² bf16 map). Only the gate is cast to the features' dtype for the product.
        """
        channels = features.shape[1]
        pooled = spatial_mean(features).float()
        with torch.autocast(device_type=features.device.type, enabled=False):
            vector = self.build_vector(pooled, scale.float())
            fc1_weight = self.fc1.weight[:, : vector.shape[1]].float()
            hidden = F.relu(F.linear(vector, fc1_weight, self.fc1.bias.float()))
            fc2_weight, fc2_bias = self.fc2.weight[:channels].float(), self.fc2.bias[:channels].float()
            gate = 2.0 * torch.sigmoid(F.linear(hidden, fc2_weight, fc2_bias))
        return features * gate.to(features.dtype)[:, :, None, None]

    def macs(self, channels: int) -> int:
        """MACs of one gate for ``channels`` active channels (once per image, whatever its size)."""
        inputs = ase_input_size(channels, self.chunk, self.interweave)
        return inputs * self.fc1.out_features + self.fc1.out_features * channels

    def used_regions(self, channels: int) -> Regions:
        """W1's first columns (the prefix vector) and W2's first ``channels`` rows, relative to this module."""
        if channels == self.channels:
            return {}
        inputs = ase_input_size(channels, self.chunk, self.interweave)
        return {
            "fc1.weight": (prefix_box(None, inputs),),
            "fc2.weight": (prefix_box(channels),),
            "fc2.bias": (prefix_box(channels),),
        }
